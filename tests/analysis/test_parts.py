"""The study sections' derived numbers on hand-made frames with known answers."""

import math

import numpy as np
import pandas as pd
import pytest

from normlab.analysis import parts
from normlab.train import metrics as M

EMPTY_RUNS = pd.DataFrame(columns=["run_id", "group"])
EMPTY_METRICS = pd.DataFrame(columns=["run_id", "step", "epoch", "name", "value"])


@pytest.mark.parametrize("build", [parts.section_with_without, parts.section_batch_size,
                                   parts.section_lr_init, parts.section_costs,
                                   parts.section_ioffe2015, parts.section_noniid])
def test_a_part_without_runs_says_not_run(build):
    section = build(EMPTY_RUNS, EMPTY_METRICS)
    assert section.setup.startswith("Not run") and not section.findings and not section.figures


def test_steps_to_target_counts_censored_runs_at_their_last_step():
    curves = pd.DataFrame({"run_id": ["a"] * 3 + ["b"] * 3, "variant": ["x"] * 6,
                           "step": [10, 20, 30] * 2, "value": [0.1, 0.5, 0.9, 0.1, 0.2, 0.3]})
    steps = parts._steps_to(curves, 0.5).set_index("run_id")
    assert steps.loc["a", "value"] == 20 and not steps.loc["a", "censored"]
    assert steps.loc["b", "value"] == 30 and steps.loc["b", "censored"]


def test_lr_stats_finds_minimum_and_end_of_usable_range():
    lrs = 10.0 ** np.arange(-5, 2)  # 1e-5 .. 1e1
    loss = [2.0, 1.9, 1.5, 1.0, 1.6, 2.5, float("nan")]
    curves = pd.DataFrame({"run_id": "a", "variant": "none", "lr": lrs, "loss": loss, "step": range(7)})
    row = parts._lr_stats(curves).iloc[0]
    # 3-point smoothed: minimum at 1e-2; it climbs past its start (1.95) at 1e0 -> usable to 1e-1
    assert row["best"] == pytest.approx(-2.0)
    assert row["max_usable"] == pytest.approx(-1.0)


def test_percentile_frame_takes_the_last_layer_first_unit():
    rows = []
    for layer in ("blocks.0.act", "blocks.2.act"):
        for unit in (0, 5):
            for q in M.PERCENTILES:
                rows.append(("r", 10, 1, M.act_unit_key(layer, unit, q), q / 100 + unit))
    metrics = pd.DataFrame(rows, columns=["run_id", "step", "epoch", "name", "value"])
    runs = pd.DataFrame({"run_id": ["r"], "variant": ["batch"], "seed": [0]})
    frame, unit = parts._percentile_frame(runs, metrics)
    assert unit == "blocks.2.act, unit 0"
    assert frame[["p15", "p50", "p85"]].iloc[0].tolist() == pytest.approx([0.15, 0.50, 0.85])


def test_recalibration_change_is_after_minus_before():
    runs = pd.DataFrame({"run_id": ["a", "b"], "seed": [0, 1], "batch_size": [8, 8]})
    metrics = pd.DataFrame([("a", 5, 1, M.TEST_ACC, 0.50), ("a", 5, 1, parts.RECAL_TEST_ACC, 0.55),
                            ("b", 5, 1, M.TEST_ACC, 0.60)],
                           columns=["run_id", "step", "epoch", "name", "value"])
    change = parts._recalibration_change(runs, metrics)
    assert list(change["run_id"]) == ["a"] and change["value"].iloc[0] == pytest.approx(0.05)
    assert parts._recalibration_change(runs, metrics[metrics.name == M.TEST_ACC]).empty


def test_hidden_and_epochs_text():
    runs = pd.DataFrame({"hidden": [None, None], "epochs": [1, 1]})
    assert parts._hidden(runs) == "[512, 256]"
    assert parts._epochs(runs) == "1 epoch"
    assert parts._epochs(runs.assign(epochs=[2, 4])) == "[2, 4] epochs"
    assert math.isclose(parts.ACC_MIN_EFFECT, 0.005)


def test_costs_measures_a_run_listed_in_two_groups_in_both():
    # Batch size 128 runs are in "overhead" and "gap"; batch size 8 runs only in "gap". The gap
    # findings must cover both sizes (deduping before picking the group lost the shared runs).
    runs, metrics = [], []
    for norm in ("none", "batch"):
        for seed in (0, 1, 2):
            for size, groups in ((128, ("overhead", "gap")), (8, ("gap",))):
                rid = f"{norm}-{size}-{seed}"
                runs += [{"run_id": rid, "group": g, "status": "finished", "seed": seed, "norm": norm,
                          "batch_size": size} for g in groups]
                gap = (0.05 if norm == "batch" else 0.0) + 0.001 * seed
                metrics += [(rid, 10, 1, M.STEP_MS, 1.0), (rid, 20, 1, M.STEP_MS, 1.0 + seed / 100),
                            (rid, 20, 1, M.TRAIN_EVAL_GAP, gap), (rid, 20, 1, M.TEST_ACC, 0.5)]
    section = parts.section_costs(pd.DataFrame(runs), pd.DataFrame(
        metrics, columns=["run_id", "step", "epoch", "name", "value"]))
    claims = [f.claim for f in section.findings]
    assert sum("(batch size 128)" in c for c in claims) == 1
    assert sum("(batch size 8)" in c for c in claims) == 1
    time = next(f for f in section.findings if f.claim.startswith("BN costs extra computation"))
    assert "(n=3 vs n=3 seeds)" in time.verdict.text  # only the overhead group's runs, each once
    assert "12 runs (12 finished)" in section.setup  # each run counted once
