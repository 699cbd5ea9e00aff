"""Part 11 (depth): its file, its --quick shrink, and its section on hand-made stored numbers with
known answers (the sign of the depth interaction, the gradient ratios at init and in training,
the spread over init scales)."""

import re
import zlib

import numpy as np
import pandas as pd
import pytest

from normlab.analysis.stats import NOT_SUPPORTED, SUPPORTED
from normlab.study import part1_bn, part3_lr_init, part11_depth
from normlab.study.common import PartData, attach_literature
from normlab.study.protocol import Selection, evaluation_runs, selection_runs
from normlab.study.registry import PARTS, load_part, protocol_for
from normlab.train import metrics as M

COLUMNS = ["run_id", "step", "epoch", "name", "value"]
DEEP = 16


def _runs(variants, seeds=range(10)):
    return pd.DataFrame(
        [
            {
                "run_id": f"{v}-{s}",
                "variant": v,
                "seed": s,
                "status": "finished",
                "lr": 1e-3,
                "steps": 1250,
                "epochs": 25,
                "batch_size": 64,
                "hidden": "[100, 100]",
                "group": f"depth/{v}",
            }
            for v in variants
            for s in seeds
        ]
    )


def _acc_rows(means: dict[str, float]):
    """One evaluation per run; held-out = test accuracy = the mean + a small per-seed offset
    shared by every variant (paired seeds) + a little independent noise."""
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, 0.01, 10)
    return [
        (f"{v}-{s}", 1250, 25, name, m + seed_effect[s] + rng.normal(0, 0.002))
        for v, m in means.items()
        for s in range(10)
        for name in (M.HOLDOUT_ACC_EVAL_MODE, M.TEST_ACC)
    ]


def _grad_rows(variant: str, depth: int, log_slope: float, steps=(1,), noise: float = 0.02):
    """Gradient norm of hidden layer k (0 = input side) = 10 ** (log_slope * (depth - 1 - k)), so
    log10(first / last) = log_slope * (depth - 1), times a per-run factor and per-layer noise."""
    rng = np.random.default_rng(zlib.crc32(f"{variant} {log_slope}".encode()))
    rows = []
    for s in range(10):
        for step in steps:
            scale = 10 ** rng.normal(0, 0.5)  # the overall size differs per run: only the ratio is read
            for k in range(depth):
                value = scale * 10 ** (log_slope * (depth - 1 - k) + rng.normal(0, noise))
                rows.append((f"{variant}-{s}", step, 1, M.grad_norm_key(f"blocks.{k}.linear.weight"), value))
            rows.append((f"{variant}-{s}", step, 1, M.grad_norm_key("head.weight"), 1e6))  # not a hidden layer
    return rows


def _section(variants, rows):
    sec = part11_depth.section(PartData(_runs(variants), pd.DataFrame(rows, columns=COLUMNS)))
    return sec, {f.claim.split(":")[0]: f for f in sec.findings}


def _claim(findings, start):
    return next(f for claim, f in findings.items() if claim.startswith(start))


# --- the file -----------------------------------------------------------------------------


def test_the_part_is_registered_in_the_full_tier():
    assert part11_depth in PARTS and part11_depth.TIER == "full"


@pytest.mark.parametrize("quick", [False, True])
def test_every_label_says_what_its_config_is(quick):
    spec = load_part(part11_depth, quick=quick)
    for v in spec.variants:
        meta = part11_depth.parse_label(v.label)
        assert meta is not None, v.label
        assert part11_depth.label(meta["norm"], meta["depth"], meta["scale"], meta["at_init"]) == v.label
        assert (v.config.norm, len(v.config.hidden), v.config.init_scale) == (
            meta["norm"],
            meta["depth"],
            meta["scale"],
        )
        assert v.kind == ("fixed" if meta["at_init"] else "tuned")
        if meta["at_init"]:  # the first step's gradient is recorded
            assert v.config.probes.grad_norms and v.config.probes.every_steps == 1
        elif meta["depth"] > 2:  # the later gradients: LATER_STEP is a probed step
            assert v.config.probes.grad_norms and part11_depth.LATER_STEP % v.config.probes.every_steps == 0


def test_the_default_file_runs_depths_2_to_16_and_four_init_scales_with_and_without_bn():
    spec = load_part(part11_depth)
    metas = [part11_depth.parse_label(v.label) for v in spec.tuned()]
    assert {(m["norm"], m["depth"]) for m in metas if m["scale"] == 1.0} == {
        (n, d) for n in ("none", "batch") for d in (2, 4, 8, 16)
    }
    assert {(m["norm"], m["scale"]) for m in metas if m["depth"] == 8} == {
        (n, s) for n in ("none", "batch") for s in (0.5, 1.0, 2.0, 5.0)
    }
    assert min(spec.lr_grid) < 1e-3 and max(spec.lr_grid) > 1e-2  # part 1's selected lrs stay interior


@pytest.mark.parametrize("quick", [False, True])
def test_shared_runs_are_part_1s_and_part_3s_so_they_train_once(quick):
    """Depth 2 = part 1's none/batch (in --quick too); the gradients at init = part 3's depth
    sweep (same run ids, so `run_study` trains each once)."""
    protocol = protocol_for(quick)
    mine, p1 = load_part(part11_depth, quick=quick), load_part(part1_bn, quick=quick)
    depth2 = {r.config.run_id for r in selection_runs(mine, protocol) if r.group.endswith(", depth 2")}
    assert depth2 and depth2 <= {r.config.run_id for r in selection_runs(p1, protocol)}
    if not quick:
        fixed3 = {v.label: v.config.run_id for v in load_part(part3_lr_init).variants if v.kind == "fixed"}
        mine_fixed = [v for v in mine.variants if v.kind == "fixed"]
        assert len(mine_fixed) == 8 and all(
            v.config.run_id == fixed3[v.label.removesuffix(", at init")] for v in mine_fixed
        )


def test_quick_is_a_few_cheap_runs_that_reach_the_depth_and_gradient_claims():
    protocol = protocol_for(True)
    spec = load_part(part11_depth, quick=True)
    fake_lrs = {v.label: type("S", (), {"lr": 1e-3})() for v in spec.tuned()}
    runs = selection_runs(spec, protocol) + evaluation_runs(spec, protocol, fake_lrs)
    steps = [min(r.config.epochs * 50, r.config.max_steps or 10**9) for r in runs]  # 50 steps per epoch
    new = [r for r in runs if not r.group.endswith(", depth 2")]  # depth 2 is part 1's quick runs
    assert len(new) <= 14 and max(steps) <= 100
    assert [s for r, s in zip(runs, steps) if r.group.endswith(", at init")] == [1] * 4  # the first step only
    metas = [part11_depth.parse_label(v.label) for v in spec.variants]
    assert {m["depth"] for m in metas if not m["at_init"]} == {2, 8}  # the interaction
    assert any(m["at_init"] and m["depth"] == 8 for m in metas)


# --- the measurements -----------------------------------------------------------------------


def test_log_ratio_is_first_over_last_hidden_layer_at_the_step():
    rows = [
        ("r", 1, 1, 0, 2.0),
        ("r", 1, 1, 1, 5.0),
        ("r", 1, 1, 2, 0.02),
        ("r", 9, 1, 0, 1.0),
        ("r", 9, 1, 2, 1.0),
        ("z", 1, 1, 0, 0.0),
        ("z", 1, 1, 2, 1.0),
    ]  # z: a zero gradient has no finite log
    grads = pd.DataFrame(
        [{"run_id": r, "step": s, "variant": "v", "seed": 0, "layer": k, "value": v} for r, s, _, k, v in rows]
    )
    at1 = part11_depth.log_ratios(grads, 1).set_index("run_id")["value"]
    assert at1.to_dict() == {"r": pytest.approx(np.log10(2.0 / 0.02))}
    assert part11_depth.log_ratios(grads, 9)["value"].tolist() == [0.0]
    assert part11_depth.later_step(grads.assign(step=grads["step"] * 0 + 250)) == 250
    assert part11_depth.later_step(pd.DataFrame({"step": [1, 100, 200, 400, 500]})) == 200  # tie: earlier
    assert part11_depth.later_step(pd.DataFrame({"step": [1]})) is None


def test_per_layer_growth_and_late_gains_by_hand():
    # r = log10(first / last) = 1.5 over 15 layer-to-layer steps: x10**0.1 per layer in norm,
    # x10**0.2 = 1.585 in squared norm
    assert part11_depth.per_layer_growth(1.5, 16) == pytest.approx(10**0.2)
    curves = {"flat": [0.5, 0.6, 0.6, 0.6, 0.6, 0.59], "rising": [0.3, 0.4, 0.5, 0.55, 0.6, 0.65]}
    rows = [
        (f"{v}-0", 50 * (i + 1), i + 1, M.HOLDOUT_ACC_EVAL_MODE, acc)
        for v, accs in curves.items()
        for i, acc in enumerate(accs)
    ]
    data = PartData(_runs(list(curves), seeds=[0]), pd.DataFrame(rows, columns=COLUMNS))
    gains = part11_depth.late_gains(data, ["flat", "rising"])
    assert gains == {"flat": pytest.approx(0.0), "rising": pytest.approx(0.65 - 0.55)}  # last 2 of 6 vs first 4


@pytest.mark.parametrize(("deep_gain", "label"), [(0.08, SUPPORTED), (-0.04, NOT_SUPPORTED)])
def test_depth_interaction_has_the_sign_of_bns_gain_at_depth_16_minus_at_2(deep_gain, label):
    """BN's gain is 2 points at depth 2 and `deep_gain` at depth 16; both networks lose accuracy
    with depth (which the difference of differences must not credit to BN)."""
    means = {"none, depth 2": 0.60, "batch, depth 2": 0.62, "none, depth 16": 0.50, "batch, depth 16": 0.50 + deep_gain}
    sec, found = _section(list(means), _acc_rows(means))
    claim = _claim(found, "BN's benefit grows with depth")
    assert claim.verdict.label == label
    assert claim.verdict.effect == pytest.approx(deep_gain - 0.02, abs=0.004)
    assert "at 16 hidden layers than at 2" in claim.claim
    gains = next(line for line in sec.measured if line.startswith("BN's gain"))
    found_gains = [float(x) for x in re.findall(r"depth \d+: ([+-]\d+\.\d+)", gains)]
    assert found_gains == [pytest.approx(2.0, abs=0.3), pytest.approx(100 * deep_gain, abs=0.3)]
    assert [f.name for f in sec.figures] == ["depth_accuracy"]


def test_gradients_at_init_vanish_without_bn_and_explode_toward_the_input_with_it():
    """No norm: each layer's gradient 10^0.3 smaller toward the input (ratio 10^-4.5 at depth 16);
    BN: 10^0.07 larger (10^+1.05): every gradient claim is supported, with the hand-made ratios."""
    variants = [part11_depth.label(n, DEEP, at_init=True) for n in ("none", "batch")]
    rows = _grad_rows(variants[0], DEEP, -0.3) + _grad_rows(variants[1], DEEP, 0.07)
    sec, found = _section(variants, rows)
    vanish, prevents, yang = (
        _claim(found, s)
        for s in (
            "Without BN the gradient vanishes",
            "BN prevents vanishing",
            "With BN the gradient grows toward the input",
        )
    )
    assert (vanish.verdict.label, prevents.verdict.label, yang.verdict.label) == (SUPPORTED,) * 3
    assert vanish.verdict.effect == pytest.approx(4.5, abs=0.05)  # lower is better: the sign is flipped
    assert yang.verdict.effect == pytest.approx(1.05, abs=0.05)
    assert prevents.verdict.effect == pytest.approx(1.05 + 4.5, abs=0.05)
    assert any("depth 16: batch +1.0" in line and "none -4.5" in line for line in sec.measured)
    line = next(line for line in sec.measured if "squared gradient norm grows" in line)
    growth = float(re.search(r"grows x([\d.]+) per layer", line).group(1))
    assert growth == pytest.approx(10 ** (2 * 0.07), abs=0.02) and "batch size 64" in line  # 10**0.07 in norm


def test_bn_gradients_that_shrink_toward_the_input_do_not_support_yang():
    variants = [part11_depth.label(n, DEEP, at_init=True) for n in ("none", "batch")]
    rows = _grad_rows(variants[0], DEEP, -0.3) + _grad_rows(variants[1], DEEP, -0.05)
    _, found = _section(variants, rows)
    assert _claim(found, "With BN the gradient grows toward the input").verdict.label == NOT_SUPPORTED
    assert _claim(found, "BN prevents vanishing").verdict.label == SUPPORTED  # still less vanishing


@pytest.mark.parametrize(("later_slope", "label"), [(0.01, SUPPORTED), (0.12, NOT_SUPPORTED)])
def test_dynamic_range_in_training_is_read_at_step_300_against_the_same_seed_at_init(later_slope, label):
    """BN at init: |log ratio| 1.05; at step 300 of the tuned runs 0.15 (shrinks) or 1.8 (grows).
    Steps 100 and 500 carry a decoy ratio that the claim must not read."""
    init = part11_depth.label("batch", DEEP, at_init=True)
    tuned = part11_depth.label("batch", DEEP)
    rows = (
        _grad_rows(init, DEEP, 0.07)
        + _grad_rows(tuned, DEEP, later_slope, steps=(300,))
        + _grad_rows(tuned, DEEP, 0.5, steps=(100, 500))
    )
    sec, found = _section([init, tuned], rows)
    claim = _claim(found, "With BN the gradients' dynamic range across layers shrinks")
    assert claim.verdict.label == label and "at step 300" in claim.claim
    assert claim.verdict.effect == pytest.approx(1.05 - 15 * later_slope, abs=0.06)  # lower is better
    assert {f.name for f in sec.figures} == {"depth_grad_ratio_init", "depth_grad_layers"}


def _selection(scores: dict[str, float]) -> dict[str, Selection]:
    """Stage 1 as stored: one lr per variant, its mean held-out accuracy `score`."""
    return {
        v: Selection(
            v, pd.DataFrame({"lr": [3e-3], "n": [2], "diverged": [0], "failed": [0], "score": [s]}), 3e-3, False
        )
        for v, s in scores.items()
    }


def _scale_means(flat: str, drops: dict[float, float]) -> dict[str, float]:
    return {
        part11_depth.label(norm, 8, scale): 0.6 - (0.0 if norm == flat else drop)
        for norm in ("none", "batch")
        for scale, drop in drops.items()
    }


@pytest.mark.parametrize(("flat", "label"), [("batch", SUPPORTED), ("none", NOT_SUPPORTED)])
def test_init_scale_claim_compares_the_drop_to_the_worst_scale(flat, label):
    """One network's accuracy is flat over x0.5-x5; the other's drops 15 points at x5 (its worst
    scale in stage 1 too): the claim (BN loses less) holds only when BN is the flat one."""
    means = _scale_means(flat, {0.5: 0.05, 1.0: 0.0, 2.0: 0.01, 5.0: 0.15})
    rows = _acc_rows(means)
    data = PartData(_runs(list(means)), pd.DataFrame(rows, columns=COLUMNS), _selection(means))
    sec = part11_depth.section(data)
    claim = next(f for f in sec.findings if "less sensitive to the initialization scale" in f.claim)
    assert claim.verdict.label == label
    assert claim.verdict.effect == pytest.approx(0.15 if flat == "batch" else -0.15, abs=0.01)
    assert "depth_init_scale" in [f.name for f in sec.figures]


def test_the_worst_scale_is_picked_on_the_selection_runs_not_on_the_evaluation_seeds():
    """Stage 1 says no-norm's worst scale is x0.5 (a 5-point drop); on the evaluation seeds x5
    looks worse (15 points). The claim measures x1 -> x0.5: picking the worst on the evaluation
    seeds would select on their noise."""
    means = _scale_means("batch", {0.5: 0.05, 1.0: 0.0, 2.0: 0.01, 5.0: 0.15})
    stage1 = {**means, part11_depth.label("none", 8, 5.0): 0.6, part11_depth.label("batch", 8, 2.0): 0.59}
    assert part11_depth.worst_scale(_selection(stage1), "none", 8, (0.5, 1.0, 2.0, 5.0)) == 0.5
    assert part11_depth.worst_scale(_selection(stage1), "batch", 8, (0.5, 1.0, 2.0, 5.0)) == 2.0
    assert part11_depth.worst_scale({}, "none", 8, (0.5, 1.0)) is None
    data = PartData(_runs(list(means)), pd.DataFrame(_acc_rows(means), columns=COLUMNS), _selection(stage1))
    claim = next(f for f in part11_depth.section(data).findings if "initialization scale" in f.claim)
    assert "no norm x0.5" in claim.claim and "BN x2" in claim.claim
    assert claim.verdict.effect == pytest.approx(0.05, abs=0.01)
    no_stage1 = part11_depth.section(PartData(data.runs, data.metrics))
    assert not any("initialization scale" in f.claim for f in no_stage1.findings)
    assert any("needs stage 1" in n for n in no_stage1.notes)


def test_every_claim_has_a_literature_line():
    variants = [part11_depth.label(n, d) for n in ("none", "batch") for d in (2, DEEP)]
    variants += [part11_depth.label(n, DEEP, at_init=True) for n in ("none", "batch")]
    variants += [part11_depth.label(n, 8, s) for n in ("none", "batch") for s in (1.0, 5.0)]
    means = {v: 0.6 for v in variants if "at init" not in v}
    rows = _acc_rows(means) + _grad_rows(variants[4], DEEP, -0.3) + _grad_rows(variants[5], DEEP, 0.07)
    rows += _grad_rows(part11_depth.label("batch", DEEP), DEEP, 0.01, steps=(300,))
    sec = part11_depth.section(PartData(_runs(variants), pd.DataFrame(rows, columns=COLUMNS), _selection(means)))
    attach_literature(sec, part11_depth.LITERATURE)
    assert len(sec.findings) == 6
    assert all(f.literature for f in sec.findings), [f.claim for f in sec.findings if not f.literature]
