"""Tidy frames from the store's tables: variant labels, curves, one number per run."""

import math

import pandas as pd
import pytest

from normlab.analysis import frames


def _runs():
    return pd.DataFrame(
        {
            "run_id": ["a", "b", "c", "d"],
            "status": ["finished"] * 4,
            "group": [""] * 4,
            "seed": [0, 1, 0, 1],
            "norm": ["none", "none", "batch", "batch"],
            "batch_size": [64, 64, 64, 64],
            "hidden": ["[100,100]"] * 4,
            "final.test_acc": [0.1, 0.2, 0.3, 0.4],
            "env.torch": ["2.13"] * 4,
        }
    )


def _metrics():
    rows = [
        (rid, step, 1, "test_acc", v + step / 100) for rid, v in zip("abcd", (0.5, 0.6, 0.7, 0.8)) for step in (10, 20)
    ]
    rows += [("a", 20, 1, "step_ms", float("inf"))]
    return pd.DataFrame(rows, columns=["run_id", "step", "epoch", "name", "value"])


def test_varying_keys_ignore_seed_results_and_environment():
    assert frames.varying_keys(_runs()) == ["norm"]


def test_label_runs():
    runs = _runs()
    assert list(frames.label_runs(runs)) == ["none", "none", "batch", "batch"]
    two = runs.assign(batch_size=[32, 64, 32, 64])
    assert frames.label_runs(two).iloc[0] == "norm=none, batch_size=32"
    assert set(frames.label_runs(runs.iloc[:1])) == {"all"}


def test_curve_frame_joins_config():
    curves = frames.curve_frame(_runs(), _metrics(), "test_acc")
    assert len(curves) == 8
    row = curves[(curves.run_id == "c") & (curves.step == 20)].iloc[0]
    assert row["value"] == pytest.approx(0.9) and row["norm"] == "batch" and row["variant"] == "batch"


def test_final_frame_last_and_median_and_missing():
    last = frames.final_frame(_runs(), _metrics(), "test_acc").set_index("run_id")["value"]
    assert last["d"] == pytest.approx(1.0)
    first = frames.final_frame(_runs(), _metrics(), "test_acc", how="min").set_index("run_id")["value"]
    assert first["d"] == pytest.approx(0.9)
    median = frames.final_frame(_runs(), _metrics(), "test_acc", how="median").set_index("run_id")["value"]
    assert median["d"] == pytest.approx(0.95)  # of 0.9 and 1.0
    ms = frames.final_frame(_runs(), _metrics(), "step_ms").set_index("run_id")["value"]
    assert math.isnan(ms["a"]) and math.isnan(ms["b"])  # inf -> NaN; never logged -> NaN
    with pytest.raises(ValueError, match="how must be one of"):
        frames.final_frame(_runs(), _metrics(), "test_acc", how="mean")
