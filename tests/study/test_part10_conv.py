"""Part 10 (conv): its file keeps the design (cells, equal steps, own lrs), --quick is cheap, and
its section gives the verdicts hand-made numbers imply: GroupNorm's small-batch advantage as an
interaction with its sign, the signed train/inference mismatch, recalibration, the fold check."""

import numpy as np
import pandas as pd
import pytest

from normlab.analysis.render import Section
from normlab.analysis.stats import NOT_SUPPORTED, SUPPORTED
from normlab.study import part10_conv as part
from normlab.study import protocol as P
from normlab.study import registry
from normlab.study.common import RECAL_TEST_ACC, PartData, attach_literature
from normlab.study.recalibrate import FOLD_ACC_CHANGE, FOLD_LEFT, FOLD_LOGIT_ERROR, FOLD_LOGIT_SCALE
from normlab.train import metrics as M

COLUMNS = ["run_id", "step", "epoch", "name", "value"]
STEP = 1000


def test_file_has_every_norm_at_both_ends_and_equal_steps():
    spec = registry.load_part(part)
    cells = {(v.config.norm, v.config.batch_size): v.config for v in spec.variants}
    for norm in part.NORMS:
        assert (norm, part.SMALL) in cells and (norm, part.LARGE) in cells
    for norm in ("batch", "group"):  # the curves of Wu & He's Fig. 1
        assert {b for n, b in cells if n == norm} == {2, 8, 32, 128}
    assert {c.model for c in cells.values()} == {"cnn"}
    assert {c.max_steps for c in cells.values()} == {STEP}  # equal steps at every batch size
    for (norm, size), c in cells.items():  # enough epochs that every run reaches its 1000 steps
        assert c.epochs * (3200 // size) >= STEP, (norm, size)
    assert cells[("group", 2)].norm_kwargs == {"num_groups": 5}  # 25 channels: 5 groups of 5
    assert all(v.kind == "tuned" for v in spec.variants)
    assert spec.lr_grid == P.ADAM_LR_GRID and set(spec.recalibrate) == {"batch bs 2", "batch bs 128"}
    assert part.TIER == "full"


def test_quick_keeps_the_claims_cells_and_is_cheap():
    spec = registry.load_part(part, quick=True)
    proto = registry.protocol_for(True)
    chosen = {v.label: P.Selection(v.label, None, spec.lr_grid[0], False) for v in spec.tuned()}
    runs = P.selection_runs(spec, proto) + P.evaluation_runs(spec, proto, chosen)
    assert {"batch bs 2", "group bs 2", "batch bs 128", "group bs 128", "none bs 128"} == {
        v.label for v in spec.variants
    }
    assert len(runs) <= 25 and sum(r.config.max_steps for r in runs) <= 250
    assert "batch bs 2" in spec.recalibrate


def _runs(cells, seeds=range(10)):
    rows = [
        {
            "run_id": f"{n} bs {b}-{s}",
            "variant": f"{n} bs {b}",
            "seed": s,
            "status": "finished",
            "lr": 3e-3,
            "steps": STEP,
            "batch_size": b,
            "norm": n,
            "group": f"conv/{n} bs {b}",
        }
        for n, b in cells
        for s in seeds
    ]
    return pd.DataFrame(rows)


def _data(acc: dict[tuple[str, int], float], extra=None, seed_noise=0.004) -> PartData:
    """One evaluation per run at step 1000: held-out (eval mode) = test accuracy = the cell's
    value + a per-seed effect shared by every cell (paired by seed) + small noise; train mode
    equal to eval mode unless `extra` gives other metrics."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.01, 10)
    rows = []
    for (n, b), value in acc.items():
        for s in range(10):
            v = value + shared[s] + rng.normal(0, seed_noise)
            rid = f"{n} bs {b}-{s}"
            rows += [
                (rid, STEP, 1, M.HOLDOUT_ACC_EVAL_MODE, v),
                (rid, STEP, 1, M.TEST_ACC, v),
                (rid, STEP, 1, M.HOLDOUT_ACC_TRAIN_MODE, v),
            ]
    metrics = pd.DataFrame(rows, columns=COLUMNS)
    if extra is not None:
        metrics = pd.concat(
            [
                metrics[~metrics.set_index(["run_id", "name"]).index.isin(extra.set_index(["run_id", "name"]).index)],
                extra,
            ],
            ignore_index=True,
        )
    return PartData(_runs(acc), metrics)


def _claim(section: Section, text: str):
    found = [f for f in section.findings if text in f.claim]
    assert len(found) == 1, [f.claim for f in section.findings]
    return found[0]


GN_ADVANTAGE = {("batch", 128): 0.92, ("group", 128): 0.89, ("batch", 2): 0.40, ("group", 2): 0.55, ("none", 128): 0.85}


def test_group_norm_small_batch_advantage_and_its_interaction():
    """BN drops 52 points from 128 to 2, GN 34: GN wins at 2, BN at 128, the interaction holds."""
    sec = part.section(_data(GN_ADVANTAGE))
    assert _claim(sec, "group norm beats BN at batch size 2").verdict.label == SUPPORTED
    assert _claim(sec, "BN beats group norm at batch size 128").verdict.label == SUPPORTED
    inter = _claim(sec, "BN loses more accuracy than group norm").verdict
    assert inter.label == SUPPORTED and inter.test.diff == pytest.approx(-0.18, abs=0.01)
    assert _claim(sec, "BN improves the CNN's test accuracy at batch size 128").verdict.label == SUPPORTED


def test_interaction_is_not_supported_when_both_drop_alike_and_has_its_sign():
    """Both lose 30 points: GN still beats BN at 2 (it beat it at 128 too), but BN's loss is
    not larger, so the interaction is not supported; when GN loses more, it points the other way."""
    same = {("batch", 128): 0.90, ("group", 128): 0.93, ("batch", 2): 0.60, ("group", 2): 0.63}
    sec = part.section(_data(same, seed_noise=0.002))
    assert _claim(sec, "group norm beats BN at batch size 2").verdict.label == SUPPORTED
    inter = _claim(sec, "BN loses more accuracy than group norm").verdict
    assert inter.label == NOT_SUPPORTED and abs(inter.test.diff) < 0.005
    reversed_ = {("batch", 128): 0.90, ("group", 128): 0.90, ("batch", 2): 0.70, ("group", 2): 0.60}
    inter = _claim(part.section(_data(reversed_, seed_noise=0.002)), "BN loses more accuracy than group norm").verdict
    assert inter.label == NOT_SUPPORTED and inter.test.diff == pytest.approx(0.10, abs=0.01)


def _gap_rows(label: str, eval_minus_train: float) -> list[tuple]:
    """Train-mode held-out accuracy set so that eval minus train = the given value per run."""
    return [(f"{label}-{s}", STEP, 1, M.HOLDOUT_ACC_TRAIN_MODE, 0.5 - eval_minus_train + 0.001 * s) for s in range(10)]


def test_inference_mismatch_is_signed_and_compared_across_batch_sizes():
    """Eval mode 5 points *better* than train mode at batch size 2 (noisy 2-example statistics)
    and 1 point worse at 128: the drop claim is not supported at 2, supported at 128, and the
    'larger at 2' claim points the other way."""
    cells = {("batch", 2): 0.5, ("batch", 128): 0.5}
    metrics = pd.DataFrame(
        [
            (f"batch bs {b}-{s}", STEP, 1, name, 0.5)
            for b in (2, 128)
            for s in range(10)
            for name in (M.HOLDOUT_ACC_EVAL_MODE, M.TEST_ACC)
        ],
        columns=COLUMNS,
    )
    train = pd.DataFrame(_gap_rows("batch bs 2", 0.05) + _gap_rows("batch bs 128", -0.01), columns=COLUMNS)
    sec = part.section(PartData(_runs(cells), pd.concat([metrics, train], ignore_index=True)))
    small = _claim(sec, "inference on the CNN (batch size 2)").verdict
    assert small.label == NOT_SUPPORTED and small.test.diff > 0
    assert _claim(sec, "inference on the CNN (batch size 128)").verdict.label == SUPPORTED
    assert _claim(sec, "against train mode at batch size 2 than at 128").verdict.label == NOT_SUPPORTED


def test_recalibration_claim_reads_after_minus_before_on_the_same_runs():
    """Recalibration adds 20 points (+/- a little) to every batch-size-2 run and 0.1 point to the
    batch-size-128 ones: supported at 2; at 128 the interval rules out half a point."""
    data = _data({("batch", 2): 0.40, ("batch", 128): 0.90})
    test = data.metrics[data.metrics["name"] == M.TEST_ACC]
    gain = np.where(test["run_id"].str.startswith("batch bs 2-"), 0.20, 0.001)
    jitter = 0.0005 * test["run_id"].str.rsplit("-", n=1).str[1].astype(int)
    recal = test.assign(name=RECAL_TEST_ACC, value=test["value"] + gain + jitter)
    data.metrics = pd.concat([data.metrics, recal], ignore_index=True)
    sec = part.section(data)
    small = _claim(sec, "recalibrate_bn improves the CNN's eval-mode test accuracy (BN trained at batch size 2)")
    assert small.verdict.label == SUPPORTED and small.verdict.test.diff == pytest.approx(0.2023, abs=1e-3)
    large = _claim(sec, "(BN trained at batch size 128)")
    assert large.verdict.label == NOT_SUPPORTED


def _fold_rows(change=0.0, error=2e-6, scale=12.0, left=0.0, bad_run=None):
    rows = []
    for b in (2, 128):
        for s in range(10):
            rid = f"batch bs {b}-{s}"
            hit = rid == bad_run
            rows += [
                (rid, STEP, 1, FOLD_ACC_CHANGE, change if hit else 0.0),
                (rid, STEP, 1, FOLD_LOGIT_ERROR, error),
                (rid, STEP, 1, FOLD_LOGIT_SCALE, scale),
                (rid, STEP, 1, FOLD_LEFT, left if hit else 0.0),
            ]
    return pd.DataFrame(rows, columns=COLUMNS)


@pytest.mark.parametrize(
    ("rows", "passed"),
    [
        (_fold_rows(), True),
        (_fold_rows(change=0.001, bad_run="batch bs 2-3"), False),  # one test example flipped in one run
        (_fold_rows(error=1e-3), False),  # 1e-3 / 12 = 8e-5 relative: beyond float32 rounding
        (_fold_rows(left=1.0, bad_run="batch bs 128-0"), False),  # a BN not folded is not checked
    ],
)
def test_fold_check_is_computed_from_the_stored_numbers(rows, passed):
    data = _data({("batch", 2): 0.4, ("batch", 128): 0.9})
    data.metrics = pd.concat([data.metrics, rows], ignore_index=True)
    sentence, ok = part.fold_summary(data, ["batch bs 2", "batch bs 128"])
    assert ok is passed and "20 trained BN CNNs" in sentence
    sec = part.section(data)
    assert any(m.startswith("fold_batchnorm on 20") for m in sec.measured)
    assert bool([n for n in sec.notes if "fold_batchnorm did not" in n]) is not passed


def test_full_grid_gives_a_table_a_figure_and_a_literature_line_per_claim():
    acc = {(n, b): 0.5 + 0.002 * b**0.5 for n in part.NORMS for b in (2, 128)}
    acc.update({(n, b): 0.6 for n in ("batch", "group") for b in (8, 32)})
    data = _data(acc)
    sec = part.section(data)
    assert len(sec.table) == len(acc) and set(sec.table["norm"]) == set(part.NORMS)
    assert sec.table.iloc[0]["norm"] == "none" and list(sec.table["batch size"][:2]) == [2, 128]
    assert [f.name for f in sec.figures] == ["conv_batch_size"]
    axes = sec.figures[0].figure.axes
    assert len(axes) == 2 and len(axes[0].containers) == len(part.NORMS)  # one errorbar set per norm
    attach_literature(sec, part.LITERATURE)
    assert len(sec.findings) == 12 and all(f.literature for f in sec.findings)
