"""The kernel benchmark's rows and summary (pure Python)."""

import math

import pytest

pytest.importorskip("triton")

from normlab.bench.kernels.matrix import cases, geomean, make_row, summarize  # noqa: E402


def test_the_matrix_has_every_shape_dtype_and_layout():
    full, quick = cases(quick=False), cases(quick=True)
    assert len(full) == 27 and len(quick) == 18
    assert {dt for _, dt, _ in quick} == {"float32", "bfloat16"}
    assert {layout for shape, _, layout in full if len(shape) == 2} == {"nc"}


def test_a_non_positive_time_is_no_measurement():
    # bwd time = time(fwd + bwd) - time(fwd): noise on a tiny row can make it <= 0; the row
    # then says NaN, which the geomean leaves out (a negative time raises "math domain error")
    timings = {
        "normlab": {"fwd_gpu_ms": 0.01, "bwd_gpu_ms": -0.002},
        "torch": {"fwd_gpu_ms": 0.02, "bwd_gpu_ms": 0.03},
        "rel_err": {"y": 0.0, "dx": 0.0},
    }
    row, line = make_row(timings, (4, 6, 5, 7), "float32", "nchw", 1e12)
    assert row["fwd_speedup"] == 2.0 and math.isnan(row["bwd_speedup"]) and math.isnan(row["bwd_tbps"])
    assert geomean([row["fwd_speedup"], row["bwd_speedup"]]) == 2.0
    assert line.startswith("         4x6x5x7  float32 nchw")


def test_counted_bytes_and_the_summary():
    # a 16 MB float32 row: forward 3 passes in 0.02 ms = 3 * 16e6 B / 2e-5 s = 2.4 TB/s
    timings = {
        "normlab": {"fwd_gpu_ms": 0.02, "bwd_gpu_ms": 0.04, "fwd_ms": 0.1, "bwd_ms": 0.1},
        "torch": {"fwd_gpu_ms": 0.04, "bwd_gpu_ms": 0.04, "fwd_ms": 0.1, "bwd_ms": 0.2},
        "rel_err": {"y": 0.0, "dx": 0.0},
    }
    row, _ = make_row(timings, (4, 1000, 1000), "float32", "nchw", 2.9e12)
    assert row["fwd_tbps"] == pytest.approx(2.4) and row["bwd_tbps"] == pytest.approx(2.0)
    assert row["fwd_pct_copy"] == pytest.approx(100 * 2.4 / 2.9)
    summary = summarize([row], 2.9e12)
    assert summary["geomean_speedup_gpu"] == pytest.approx(math.sqrt(2.0))
    assert summary["geomean_speedup_eager"] == pytest.approx(math.sqrt(2.0))
    assert (summary["rows_ge_16MB_at_80pct"], summary["rows_ge_16MB"]) == (1, 2)  # fwd 83%, bwd 69%
    assert math.isnan(summary["geomean_speedup_gpu_bf16_nchw"])  # no such row
