"""normlab.bench.layers_cpu: reference BN vs torch's CPU kernel, on the quick shapes."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from normlab.bench import layers_cpu
from normlab.bench.layers_cpu import main
from normlab.layers import BatchNorm

REPO = Path(__file__).resolve().parents[2]
TOP_KEYS = {
    "benchmark",
    "what",
    "rows",
    "geomean_ratio",
    "geomean_ratio_of_min",
    "machine",
    "versions",
    "commit",
    "repeats",
    "quick",
    "provenance",
}
ROW_KEYS = {
    "shape",
    "mb",
    "reference_ms",
    "torch_ms",
    "ratio",
    "reference_min_ms",
    "torch_min_ms",
    "ratio_of_min",
    "max_abs_diff",
}


def test_main_quick_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "deep" / "layers.json"
    torch.set_num_threads(2)
    assert main(["--quick", "--repeats", "3", "--threads", "1", "--out", str(out)]) == 0
    assert torch.get_num_threads() == 2  # restored
    result = json.loads(out.read_text())
    assert set(result) == TOP_KEYS and result["benchmark"] == "layers_cpu"
    assert result["repeats"] == 3 and result["quick"] is True
    assert result["machine"]["torch_threads"] == result["provenance"]["torch_threads"] == 1
    assert result["versions"]["torch"] == torch.__version__
    assert [r["shape"] for r in result["rows"]] == [list(s) for s in layers_cpu.QUICK_SHAPES]
    for row in result["rows"]:
        assert set(row) == ROW_KEYS
        assert row["reference_ms"] > 0 and row["torch_ms"] > 0
        assert row["reference_min_ms"] <= row["reference_ms"] and row["torch_min_ms"] <= row["torch_ms"]
        assert row["ratio"] == pytest.approx(row["reference_ms"] / row["torch_ms"])
        assert row["ratio_of_min"] == pytest.approx(row["reference_min_ms"] / row["torch_min_ms"])
        assert row["mb"] == pytest.approx(torch.Size(row["shape"]).numel() * 4 / 1e6)
        assert row["max_abs_diff"] < 1e-4  # reference and torch agree
    assert result["geomean_ratio"] == pytest.approx(statistics.geometric_mean([r["ratio"] for r in result["rows"]]))
    printed = capsys.readouterr().out
    assert "reference ms" in printed and "(8, 32, 16, 16)" in printed and "geomean ratio" in printed


def test_step_times_ms_times_every_layer_repeats_times():
    x = torch.randn(8, 4, requires_grad=True)
    layers = {b: BatchNorm(4, impl=b) for b in layers_cpu.IMPLS}
    times = layers_cpu.step_times_ms(layers, x, torch.randn(8, 4), repeats=3)
    assert set(times) == set(layers_cpu.IMPLS)
    assert all(len(t) == 3 and min(t) > 0 for t in times.values())


def test_check_agree_catches_a_wrong_result(monkeypatch):
    assert layers_cpu.check_agree((16, 4)) < 1e-5

    def off_by_one(num_features, impl):
        layer = BatchNorm(num_features, impl=impl)
        if impl == "reference":
            layer.register_forward_hook(lambda module, inputs, y: y + 1.0)
        return layer

    monkeypatch.setattr(layers_cpu, "BatchNorm", off_by_one)
    assert layers_cpu.check_agree((16, 4)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--repeats", "0"], "--repeats: expected >= 1 timed step per shape, got 0"),
        (["--threads", "-1"], "--threads: expected a positive number of threads, got -1"),
    ],
)
def test_bad_options_exit_2_with_one_message(tmp_path, capsys, args, message):
    out = tmp_path / "layers.json"
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--quick", "--out", str(out)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_the_script_in_benchmarks_is_a_thin_call_of_main(tmp_path):
    """`PYTHONPATH=src python benchmarks/layers_cpu.py ...` (benchmarks/README.md) still works."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "layers_cpu.py"), "--threads", "1", "--quick", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "geomean ratio" in proc.stdout
    assert json.loads((tmp_path / "bench-out" / "layers_cpu.json").read_text())["quick"] is True
