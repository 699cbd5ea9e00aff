"""The kernel benchmark's entry points on CPU: the dry run of every phase (Triton's interpreter,
tiny shapes) through the script, and the clear errors where the benchmark cannot run."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("triton")

from clitools import assert_user_error  # noqa: E402
from normlab import cli  # noqa: E402
from normlab.bench.kernels import run  # noqa: E402
from normlab.experiments.errors import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the GPU-less errors")


def test_dry_run_of_every_phase_writes_the_json(tmp_path):
    """benchmarks/bn_kernels.py in a fresh process that does not set TRITON_INTERPRET itself:
    --dry-run must switch the interpreter on before the kernels load."""
    out = tmp_path / "bn.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bn_kernels.py"), "--dry-run", "--v4", "--sweep", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dry run ok" in proc.stdout
    result = json.loads(out.read_text())
    assert {"provenance", "summary", "rows", "timing_s", "v4", "sweep"} <= set(result)
    assert list(result["timing_s"]) == ["matrix", "breakdown", "v4", "sweep"]  # every phase ran
    assert result["provenance"]["mode"] == "dry run (Triton interpreter)"
    assert result["provenance"]["triton"]
    for row in result["rows"]:  # normlab's kernels agree with torch, and every time is positive
        tolerance = 1e-5 if row["dtype"] == "float32" else 2e-2  # bf16/fp16 outputs round
        assert max(row["rel_err"].values()) < tolerance, row
        # positive, or NaN where the tiny dry-run backward's time difference fell to <= 0
        assert not (row["fwd_tbps"] <= 0) and not (row["bwd_tbps"] <= 0), row
    assert result["v4"]["knobs"] and not result["v4"]["skipped"]
    assert result["sweep"]["entries"] and all("error" not in e for e in result["sweep"]["entries"])
    assert len(result["summary"]["kernel_breakdown"]) == 3


def _rows(worst: float) -> dict:
    return {"rows": [{"rel_err": {"y": 1e-7, "dx": worst}}], "summary": {"kernel_breakdown": []}}


def test_check_dry_run_fails_on_a_bad_result_or_a_failed_entry():
    run.check_dry_run(_rows(1e-3))
    with pytest.raises(run.DryRunFailed, match=r"worst relative error 5.0e-01"):
        run.check_dry_run(_rows(0.5))
    with pytest.raises(run.DryRunFailed, match="worst relative error nan"):
        run.check_dry_run(_rows(math.nan))  # NaN outputs are no agreement
    failed = {**_rows(1e-3), "sweep": {"entries": [{"change": "stages", "error": "OutOfResources"}]}}
    with pytest.raises(run.DryRunFailed, match="1 failed entries.*OutOfResources"):
        run.check_dry_run(failed)


@no_gpu
def test_without_a_gpu_it_says_so_and_offers_the_dry_run():
    with pytest.raises(ConfigError, match="on a CUDA GPU, and none is visible.*add --dry-run"):
        run.prepare(dry_run=False)


def test_without_triton_it_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs Triton, which is not installed.*normlab\[gpu\]"):
        run.prepare(dry_run=True)
    with pytest.raises(ConfigError, match="needs Triton"):
        run.bench_kernel_resources(out="unused.json")


def test_a_dry_run_after_the_kernels_loaded_compiled_asks_for_a_fresh_process(monkeypatch):
    import normlab.kernels.triton_bn  # noqa: F401  (loaded, as a compiled run would have)

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ConfigError, match="run it in a fresh process"):
        run.prepare(dry_run=True)


def test_the_resources_report_refuses_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(ConfigError, match="unset TRITON_INTERPRET"):
        run.bench_kernel_resources(out="unused.json")


def test_the_scripts_turn_user_errors_into_exit_code_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--budget-s", "0", "--dry-run"])
    assert exit_info.value.code == 2
    assert "--budget-s: expected a positive number of seconds, got 0.0" in capsys.readouterr().err


cli_runner = CliRunner()


def test_cli_help_has_examples_and_the_options():
    result = cli_runner.invoke(cli.app, ["bench", "kernels", "--help"])
    assert result.exit_code == 0
    assert "Example: normlab bench kernels --dry-run" in result.output
    for option in ("--quick", "--v4", "--sweep", "--budget-s", "--dry-run", "--out"):
        assert option in result.output
    assert "kernels" in cli_runner.invoke(cli.app, ["bench", "--help"]).output


@no_gpu
def test_cli_without_a_gpu_is_one_clear_error(tmp_path):
    result = cli_runner.invoke(cli.app, ["bench", "kernels", "--out", str(tmp_path / "k.json")])
    assert_user_error(result, "none is visible", "--dry-run")
    assert not (tmp_path / "k.json").exists()


def test_cli_dry_run_fails_with_exit_code_1_when_the_results_are_wrong(tmp_path, monkeypatch):
    def broken(**kwargs):
        raise run.DryRunFailed("dry run FAILED: 0 failed entries [], worst relative error 1.0e+00")

    from normlab.commands import bench as bench_command

    monkeypatch.setattr(bench_command, "bench_kernels", broken)
    result = cli_runner.invoke(cli.app, ["bench", "kernels", "--dry-run"])
    assert result.exit_code == 1 and "worst relative error 1.0e+00" in result.stderr
