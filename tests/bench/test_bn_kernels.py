"""benchmarks/bn_kernels.py (GPU-only timings) smoke-tested on CPU: its --dry-run runs the
matrix, the v4 comparison and the sweep through the Triton interpreter on tiny shapes, so the
next GPU session's one call does not fail on plumbing."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bn_kernels.py"


def _module():
    spec = importlib.util.spec_from_file_location("bn_kernels_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_plan_isolates_each_v4_change_on_the_large_rows():
    bench = _module()
    plan = bench.sweep_plan(list(bench.cases(False)))
    assert len(plan) == 34


def test_a_non_positive_time_is_no_measurement():
    # bwd time = time(fwd + bwd) - time(fwd): noise on a tiny row can make it <= 0; the row
    # then says NaN and the geomean leaves it out (it crashed with "math domain error")
    bench = _module()
    timings = {"normlab": {"fwd_gpu_ms": 0.01, "bwd_gpu_ms": -0.002},
               "torch": {"fwd_gpu_ms": 0.02, "bwd_gpu_ms": 0.03},
               "rel_err": {"y": 0.0, "dx": 0.0}}
    row, _ = bench.make_row(timings, (4, 6, 5, 7), "float32", "nchw", 1e12)
    assert row["fwd_speedup"] == 2.0 and math.isnan(row["bwd_speedup"]) and math.isnan(row["bwd_tbps"])
    assert bench._geomean([row["fwd_speedup"], row["bwd_speedup"]]) == 2.0


def test_dry_run_of_matrix_v4_and_sweep_writes_the_json(tmp_path):
    out = tmp_path / "bn.json"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(SCRIPT.parents[1] / "src")}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--v4", "--sweep", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert {"provenance", "summary", "rows", "timing_s", "v4", "sweep"} <= set(result)
    assert list(result["timing_s"]) == ["matrix", "breakdown", "v4", "sweep"]  # every phase ran
    for row in result["rows"]:  # normlab's kernels agree with torch, and every time is positive
        tolerance = 1e-5 if row["dtype"] == "float32" else 2e-2  # bf16/fp16 outputs round
        assert max(row["rel_err"].values()) < tolerance, row
        # positive, or NaN where the tiny dry-run backward's time difference fell to <= 0
        assert not (row["fwd_tbps"] <= 0) and not (row["bwd_tbps"] <= 0), row
    assert result["v4"]["knobs"] and result["sweep"]["entries"]
