"""normlab.bench.training_loop: the seed-style loop vs the engine, on a tiny workload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from normlab.bench import training_loop
from normlab.bench.training_loop import main

REPO = Path(__file__).resolve().parents[2]
TOP_KEYS = {
    "benchmark",
    "samples",
    "batch_size",
    "repeats",
    "workers",
    "compile",
    "precision",
    "cuda_graph",
    "device",
    "rows",
    "provenance",
}
ROW_KEYS = {
    "model",
    "seed_style_s",
    "engine_epoch_s",
    "engine_fit_s",
    "speedup",
    "speedup_whole_fit",
    "seed_style_all_s",
    "engine_epoch_all_s",
}


def test_main_times_both_loops_and_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "sub" / "loop.json"
    torch.set_num_threads(2)
    assert (
        main(
            [
                "--device",
                "cpu",
                "--samples",
                "128",
                "--repeats",
                "2",
                "--norms",
                "batch",
                "--threads",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert torch.get_num_threads() == 2  # restored
    result = json.loads(out.read_text())
    assert set(result) == TOP_KEYS
    assert result["benchmark"] == "training_loop" and result["samples"] == 128
    assert (result["batch_size"], result["repeats"], result["device"]) == (64, 2, "cpu")
    assert result["cuda_graph"] is False and result["compile"] is False
    assert result["provenance"]["torch_threads"] == 1
    [row] = result["rows"]
    assert set(row) == ROW_KEYS and row["model"] == "mlp norm=batch"
    assert len(row["seed_style_all_s"]) == len(row["engine_epoch_all_s"]) == 2
    assert all(t > 0 for t in [*row["seed_style_all_s"], *row["engine_epoch_all_s"], row["engine_fit_s"]])
    # the summary is the median of the repeats, and the ratios come from the same row
    assert row["seed_style_s"] == pytest.approx(sum(row["seed_style_all_s"]) / 2)
    assert row["speedup"] == pytest.approx(row["seed_style_s"] / row["engine_epoch_s"])
    assert row["speedup_whole_fit"] == pytest.approx(row["seed_style_s"] / row["engine_fit_s"])
    # the whole fit includes the training epoch
    assert row["engine_fit_s"] > row["engine_epoch_s"]
    printed = capsys.readouterr().out
    assert "seed-style s" in printed and "mlp norm=batch" in printed and f"wrote {out}" in printed


def test_cuda_graph_reaches_the_engines_config(monkeypatch):
    """--cuda-graph is passed through to RunConfig (fit itself refuses it on CPU)."""
    from normlab.data import load_dataset

    seen = []

    def fake_fit(config, *, dataset, on_metrics):
        seen.append(config)
        on_metrics(1, 1, {"epoch_seconds": 0.5})

    monkeypatch.setattr(training_loop, "fit", fake_fit)
    data = load_dataset("synthetic", shape=(3, 32, 32), train_size=64, test_size=8, uint8=True)
    epoch_s, fit_s = training_loop.engine_epoch(data, "none", torch.device("cpu"), cuda_graph=True)
    assert seen[0].cuda_graph is True and seen[0].norm == "none" and epoch_s == 0.5 and fit_s > 0
    training_loop.engine_epoch(data, "none", torch.device("cpu"))
    assert seen[1].cuda_graph is False


@pytest.mark.parametrize(
    "args, message",
    [
        (["--samples", "10"], "--samples: expected >= 64 (one batch), got 10"),
        (["--repeats", "0"], "--repeats: expected >= 1"),
        (["--workers", "-1"], "--workers: expected >= 0"),
        (["--norms", "batch,bn"], "--norms: unknown norm 'bn'; valid: none, batch"),
        (["--norms", ","], "--norms: expected at least one norm"),
        (["--threads", "0"], "--threads: expected a positive number of threads, got 0"),
        (["--device", "tpu"], "--device: expected cpu, cuda, cuda:N or auto, got 'tpu'"),
        (["--device", "cuda"], "--device: 'cuda' asks for a GPU, but CUDA is not available on this machine"),
        (["--device", "cpu", "--cuda-graph"], "--cuda-graph is a GPU option of the engine, but the device is cpu"),
        (["--device", "cpu", "--compile"], "--compile is a GPU option"),
        (["--device", "cpu", "--precision", "bf16"], "--precision bf16 is a GPU option"),
    ],
)
def test_bad_options_exit_2_with_one_message_before_anything_runs(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(training_loop, "seed_style_epoch", lambda *a: pytest.fail("timed with bad options"))
    out = tmp_path / "loop.json"
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--out", str(out)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_script_in_benchmarks_is_a_thin_call_of_main(tmp_path):
    """The command in benchmarks/README.md still works from any folder (PYTHONPATH=src)."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "training_loop.py"),
            "--device",
            "cpu",
            "--samples",
            "64",
            "--repeats",
            "1",
            "--norms",
            "none",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mlp norm=none" in proc.stdout
    assert json.loads((tmp_path / "training_loop.json").read_text())["rows"][0]["model"] == "mlp norm=none"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_run_on_a_gpu(tmp_path):
    out = tmp_path / "loop.json"
    assert (
        main(
            [
                "--device",
                "cuda",
                "--samples",
                "256",
                "--repeats",
                "1",
                "--norms",
                "batch",
                "--cuda-graph",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["cuda_graph"] is True and result["rows"][0]["speedup"] > 0
