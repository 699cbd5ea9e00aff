"""`normlab bench loop|layers`: help, a tiny real run of each, user errors (exit 2, one line)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from clitools import assert_user_error
from normlab import cli

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(cli.app, [str(a) for a in args])


@pytest.mark.parametrize("command", ["loop", "layers"])
def test_help_has_an_example_and_the_options(command):
    result = invoke("bench", command, "--help")
    assert result.exit_code == 0
    assert f"Example: normlab bench {command}" in result.output
    assert "--out" in result.output and "--threads" in result.output and "--repeats" in result.output
    if command == "loop":
        for option in ("--device", "--samples", "--norms", "--compile", "--precision", "--cuda-graph", "--workers"):
            assert option in result.output


def test_bench_alone_lists_its_commands():
    result = invoke("bench", "--help")
    assert result.exit_code == 0 and "loop" in result.output and "layers" in result.output


def test_layers_writes_its_json_in_the_current_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(2)
    result = invoke("bench", "layers", "--quick", "--repeats", "1", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == 2  # restored after the benchmark
    assert "reference ms" in result.stdout and "wrote layers_cpu.json" in result.stdout
    written = json.loads((tmp_path / "layers_cpu.json").read_text())
    assert written["benchmark"] == "layers_cpu" and written["provenance"]["torch_threads"] == 1


def test_loop_tiny_real_run(tmp_path):
    out = tmp_path / "loop.json"
    result = invoke(
        "bench",
        "loop",
        "--device",
        "cpu",
        "--samples",
        "64",
        "--repeats",
        "1",
        "--norms",
        "batch",
        "--threads",
        "1",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "mlp norm=batch" in result.stdout and "ratio fit" in result.stdout
    row = json.loads(out.read_text())["rows"][0]
    assert row["speedup"] == pytest.approx(row["seed_style_s"] / row["engine_epoch_s"]) and row["speedup"] > 0


@pytest.mark.parametrize(
    "args, texts",
    [
        (["loop", "--samples", "10"], ["--samples: expected >= 64", "got 10"]),
        (
            ["loop", "--device", "cuda"],
            ["--device: 'cuda' asks for a GPU, but CUDA is not available", "use cpu or auto"],
        ),
        (["loop", "--device", "npu"], ["--device: expected cpu, cuda, cuda:N or auto", "'npu'"]),
        (["loop", "--device", "cpu", "--cuda-graph"], ["--cuda-graph is a GPU option", "--device cuda"]),
        (["loop", "--norms", "bn"], ["unknown norm 'bn'", "batch"]),
        (["loop", "--precision", "fp16"], ["--precision: expected one of fp32, bf16", "'fp16'"]),
        (["loop", "--threads", "0"], ["--threads: expected a positive number", "got 0"]),
        (["layers", "--repeats", "0"], ["--repeats: expected >= 1"]),
        (["layers", "--out", "."], ["--out: expected a JSON file path, got the folder"]),
    ],
)
def test_bad_arguments_exit_2_with_one_message_and_write_nothing(tmp_path, monkeypatch, args, texts):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    assert_user_error(invoke("bench", *args), *texts)
    assert list(tmp_path.iterdir()) == []
