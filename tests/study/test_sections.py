"""The parts' measurements on hand-made frames with known answers: each test would fail on a
flawed metric (gap at a fixed step, BN's drop without no-norm's, a quantized end of range,
a probe after BN, an absolute train/eval gap)."""

import numpy as np
import pandas as pd
import pytest

from normlab.analysis.render import Finding, Section
from normlab.analysis.stats import NOT_SUPPORTED, SUPPORTED, verdict
from normlab.study import (
    part1_bn,
    part3_lr_init,
    part4_costs,
    part5_ioffe2015,
    part6_noniid,
)
from normlab.study.common import PartData
from normlab.study.registry import PARTS
from normlab.train import metrics as M

COLUMNS = ["run_id", "step", "epoch", "name", "value"]
EMPTY = PartData(pd.DataFrame(columns=["run_id", "group", "variant"]), pd.DataFrame(columns=COLUMNS))


@pytest.mark.parametrize("part", PARTS, ids=lambda p: p.KEY)
def test_a_part_without_runs_says_not_run(part):
    section = part.section(EMPTY)
    assert section.setup.startswith("Not run") and not section.findings and not section.figures


def _runs(variants, seeds=range(10), **extra):
    rows = [
        {
            "run_id": f"{v}-{s}",
            "variant": v,
            "seed": s,
            "status": "finished",
            "lr": 1e-3,
            "steps": 300,
            "epochs": 3,
            "batch_size": 64,
            "hidden": "[100, 100]",
            "norm": v.split(",")[0].split(" ")[0],
            "group": f"p/{v}",
            **extra,
        }
        for v in variants
        for s in seeds
    ]
    return pd.DataFrame(rows)


def test_gap_is_read_at_matched_training_loss_not_at_a_fixed_step():
    """'fast' trains twice as fast as 'slow'; at any step its gap is larger (it is further
    along), but at the same training loss both have the same test loss minus training loss."""
    rows = []
    for variant, speed in (("fast", 2.0), ("slow", 1.0)):
        for seed in range(10):
            rid = f"{variant}-{seed}"
            for epoch in range(1, 11):
                train = 2.0 * np.exp(-0.3 * speed * epoch)
                test = train + 0.5 * (2.0 - train) + 0.001 * seed  # gap depends only on train loss
                rows += [
                    (rid, 10 * epoch, epoch, M.EPOCH_TRAIN_LOSS, train),
                    (rid, 10 * epoch, epoch, M.TEST_LOSS, test),
                ]
    metrics = pd.DataFrame(rows, columns=COLUMNS)
    data = PartData(_runs(["fast", "slow"]), metrics)
    curves = part1_bn.loss_curves(data, ["fast", "slow"])
    level = part1_bn.matched_level(curves)
    assert level == pytest.approx(2.0 * np.exp(-0.3 * 10))  # the slow runs' lowest loss
    gap = part1_bn.gap_at_matched_loss(curves, level).groupby("variant")["value"].mean()
    assert gap["fast"] == pytest.approx(gap["slow"], abs=1e-3)  # same gap at the same progress
    final = metrics[(metrics["step"] == 30)].pivot_table(index="run_id", columns="name", values="value")
    at_step = (final[M.TEST_LOSS] - final[M.EPOCH_TRAIN_LOSS]).groupby(lambda r: r.split("-")[0]).mean()
    assert at_step["fast"] > at_step["slow"] + 0.1  # the flawed fixed-step metric would differ


def test_gap_interpolates_between_evaluations_and_skips_runs_that_never_get_there():
    curves = pd.DataFrame(
        {
            "run_id": ["a"] * 3 + ["b"] * 2,
            "variant": "v",
            "seed": 0,
            "step": [1, 2, 3, 1, 2],
            "train": [1.0, 0.5, 0.25, 1.0, 0.9],
            "test": [1.5, 1.5, 2.0, 1.2, 1.1],
        }
    )
    gap = part1_bn.gap_at_matched_loss(curves, 0.5**1.5).set_index("run_id")["value"]
    assert gap["a"] == pytest.approx(1.75 - 0.5**1.5)  # halfway in log loss between 0.5 and 0.25
    assert np.isnan(gap["b"])


def _acc_metrics(values: dict[str, list[float]]) -> pd.DataFrame:
    """One evaluation per run: held-out and test accuracy both = the given value."""
    rows = []
    for variant, accs in values.items():
        for seed, acc in enumerate(accs):
            rid = f"{variant}-{seed}"
            rows += [(rid, 100, 1, M.HOLDOUT_ACC_EVAL_MODE, acc), (rid, 100, 1, M.TEST_ACC, acc)]
    return pd.DataFrame(rows, columns=COLUMNS)


def test_noniid_verdict_is_the_interaction_with_no_norm():
    """Grouped batches cost BN and no-norm the same 10 points: BN's own drop is large and
    significant, but the claim (it hurts BN *more*) must not be supported."""
    rng = np.random.default_rng(0)
    base = {"none, iid": 0.60, "batch, iid": 0.65, "none, 2 classes": 0.50, "batch, 2 classes": 0.55}
    noise = rng.normal(0, 0.01, 10)
    values = {v: list(m + noise + rng.normal(0, 0.002, 10)) for v, m in base.items()}
    data = PartData(_runs(list(base)), _acc_metrics(values))
    section = part6_noniid.section(data)
    claim = next(f for f in section.findings if "hurt BN at inference more" in f.claim)
    assert claim.verdict.label == NOT_SUPPORTED
    assert abs(claim.verdict.test.diff) < 0.01
    # with a BN-only drop the interaction is found
    values["batch, 2 classes"] = list(np.asarray(values["batch, 2 classes"]) - 0.05)
    section = part6_noniid.section(PartData(_runs(list(base)), _acc_metrics(values)))
    claim = next(f for f in section.findings if "hurt BN at inference more" in f.claim)
    assert claim.verdict.label == SUPPORTED


def test_end_of_usable_range_is_interpolated_not_quantized():
    """Two runs whose loss climbs back past its start at different lrs between the logged
    points: the end of range differs and is not a logged value (a logging-grid value would
    give zero spread and p = 0)."""
    x = np.round(np.arange(-5.0, 0.01, 0.2), 6)  # log10 lr, logged every 0.2
    rows = []
    for rid, centre in (("a", -3.05), ("b", -2.93)):
        loss = 1.0 + 0.1 * (x - centre) ** 2  # back at its start (x=-5) at x = 2 * centre + 5
        rows += [
            {"run_id": rid, "variant": "v", "seed": 0, "lr": 10.0**xi, "loss": li, "step": i}
            for i, (xi, li) in enumerate(zip(x, loss))
        ]
    stats = part3_lr_init.lr_stats(pd.DataFrame(rows)).set_index("run_id")
    a, b = stats.loc["a", "max_usable"], stats.loc["b", "max_usable"]
    # (the start is the 3-point smoothed first value, a little below loss[0]: crossings come early)
    assert a == pytest.approx(-1.1, abs=0.15) and b - a == pytest.approx(2 * 0.12, abs=0.03)
    assert min(abs(x - a).min(), abs(x - b).min()) > 1e-3  # between logged points
    assert stats.loc["a", "best"] == pytest.approx(-3.05, abs=0.02)  # the parabola's vertex
    assert not stats["censored"].any()


def test_stability_probe_reads_the_linear_output_before_the_norm():
    """Percentiles of blocks.2.act (after BN: stable) and blocks.2.linear (before BN): the
    part reads the Linear output."""
    rows = []
    for layer, shift in (("blocks.2.act", 0.0), ("blocks.2.linear", 1.0)):
        for step in (10, 20, 30):
            for q in M.PERCENTILES:
                rows.append(("r", step, 1, M.act_unit_key(layer, 0, q), q / 100 + shift * step))
    metrics = pd.DataFrame(rows, columns=COLUMNS)
    frame, layer = part5_ioffe2015.percentile_frame(
        pd.DataFrame({"run_id": ["r"], "variant": ["batch"], "seed": [0]}), metrics
    )
    assert layer == "blocks.2.linear"
    drift = part5_ioffe2015.drift(frame)["value"].iloc[0]
    assert drift == pytest.approx(20 / 0.7)  # the median moved 20, spread 0.7


def test_train_inference_claim_is_signed():
    """BN whose eval mode is *better* than its train mode by 3 points: an absolute gap would
    call the claim (a drop at inference) supported; the signed test says not supported."""
    rows = []
    for seed in range(10):
        rid = f"batch-{seed}"
        rows += [
            (rid, 100, 1, M.HOLDOUT_ACC_EVAL_MODE, 0.60 + 0.001 * seed),
            (rid, 100, 1, M.HOLDOUT_ACC_TRAIN_MODE, 0.57 + 0.0015 * seed),
            (rid, 100, 1, M.TEST_ACC, 0.6),
        ]
    section = part4_costs.section(PartData(_runs(["batch"]), pd.DataFrame(rows, columns=COLUMNS)))
    claim = next(f for f in section.findings if "eval mode loses accuracy" in f.claim)
    assert claim.verdict.label == NOT_SUPPORTED and claim.verdict.test.diff > 0


def test_literature_says_whether_this_run_agrees():
    from normlab.study.common import Literature, attach_literature

    up, flat = verdict([1.0, 1.1, 1.2] * 3, [0.0, 0.1, 0.2] * 3, what="x"), verdict([0, 1, 2], [0, 1, 2], what="x")
    section = Section(
        "t",
        "s",
        findings=[
            Finding("A grows", up),
            Finding("B grows", up),
            Finding("C grows", flat),
            Finding("D grows", up),
            Finding("E grows", up),
        ],
    )
    entries = [
        Literature("A", "Paper found A.", SUPPORTED),
        Literature("B", "Paper found no B.", NOT_SUPPORTED),
        Literature("C", "Paper found C.", SUPPORTED),
        Literature("D", "No clear claim.", None),
    ]
    attach_literature(section, entries)
    assert [f.literature for f in section.findings] == [
        "Paper found A. This run agrees.",
        "Paper found no B. This run disagrees.",
        "Paper found C. This run cannot tell (inconclusive).",
        "No clear claim. No clear prediction to compare this run with.",
        "",
    ]


def _timing_rows(ms_by_variant):
    return [
        (f"{v}, timing-{s}", 0, 0, "paired_step_ms", ms + 0.001 * s)
        for v, ms in ms_by_variant.items()
        for s in range(10)
    ]


@pytest.mark.parametrize(("batch_ms", "label"), [(1.3, SUPPORTED), (1.0, NOT_SUPPORTED)])
def test_cost_claim_points_up_a_slower_bn_step_supports_it(batch_ms, label):
    """'BN costs extra computation' is a claim that BN's step takes longer: a BN step 0.3 ms
    slower than no-norm's supports it; an equal one rules it out (interval below 0.02 ms)."""
    metrics = pd.DataFrame(_timing_rows({"none": 1.0, "batch": batch_ms}), columns=COLUMNS)
    section = part4_costs.section(PartData(_runs(["none, timing", "batch, timing"]), metrics))
    claim = next(f for f in section.findings if "extra computation" in f.claim)
    assert claim.verdict.label == label
