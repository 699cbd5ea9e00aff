"""The command line: every command's help, user errors (exit 2, one line, nothing written),
and sweep -> ls -> compare -> export on a fake engine; one real `python -m normlab run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from clitools import assert_user_error
from normlab import cli
from normlab.experiments import execute

try:  # tests/experiments/fakes.py: pytest puts tests/ on sys.path (no tests/__init__.py)
    from experiments import fakes
except ImportError:  # if tests/ ever becomes a package
    from tests.experiments import fakes

runner = CliRunner()
COMMANDS = [["run"], ["sweep"], ["ls"], ["compare"], ["export"], ["study"], ["report"], ["data", "info"]]


def invoke(*args: str):
    return runner.invoke(cli.app, [str(a) for a in args])


@pytest.fixture
def fake_engine(monkeypatch):
    """Runs executed by the CLI use the fake engine (instant, deterministic)."""
    monkeypatch.setattr(execute, "default_run_fn", fakes.flaky_fit)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_complete_help_with_an_example(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Example: normlab" in result.output
    if command != ["data", "info"]:
        assert "--out" in result.output


@pytest.mark.parametrize(
    "args, texts",
    [
        (["sweep", "nrom=none,batch"], ["`nrom`", "did you mean `norm`"]),
        (["run", "batch_size=0"], ["`batch_size`", "got 0"]),
        (["run", "norm=batchnorm"], ["unknown norm 'batchnorm'"]),
        (["sweep", "missing.yaml"], ["does not exist"]),
        (["sweep", "seed=0", "stray"], ["argument 'stray'", "expected key=value"]),
        (["run", "seed=0,1"], ["`run` trains one run, got 2", "normlab sweep"]),
        (["sweep", "--executor", "gpu"], ["local, process, ray", "'gpu'"]),
        (["sweep", "--backend", "local", "--executor", "ray"], ["--backend is the deprecated name of --executor"]),
        (["sweep", "--workers", "0"], ["--workers"]),
    ],
)
def test_user_errors_exit_2_with_one_message_and_write_nothing(tmp_path, args, texts):
    out = tmp_path / "out"
    assert_user_error(invoke(*args, "--out", out), *texts)
    assert not (out / "normlab.db").exists()


def test_read_commands_on_a_missing_folder_or_experiment(tmp_path, fake_engine):
    assert_user_error(invoke("ls", "--out", tmp_path / "none"), "no results store")
    assert_user_error(invoke("compare", "x", "--out", tmp_path / "none"), "no results store")
    assert invoke("sweep", "seed=0", "--name", "a", "--out", tmp_path, "-q").exit_code == 0
    assert_user_error(invoke("compare", "b", "--out", tmp_path), "no experiment 'b'", "known: a")
    assert_user_error(invoke("export", "b", "--out", tmp_path), "no experiment 'b'")
    assert_user_error(invoke("export", "a", "--format", "xlsx", "--out", tmp_path), "csv, parquet, tensorboard")
    assert_user_error(invoke("compare", "a", "--metric", "nope", "--out", tmp_path), "no 'nope' values")


def test_missing_ray_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    assert_user_error(invoke("sweep", "--executor", "ray", "--out", tmp_path), "pip install 'normlab[ray]'")
    assert not (tmp_path / "normlab.db").exists()


def test_dry_run_lists_the_runs_and_writes_nothing(tmp_path):
    result = invoke("sweep", "norm=none,batch", "seed=0,1", "--dry-run", "--out", tmp_path / "o")
    assert result.exit_code == 0
    assert len(result.stdout.strip().splitlines()) == 4
    assert not (tmp_path / "o").exists()
    refused = invoke("sweep", "seed=0", "--workers", "0", "--dry-run", "--out", tmp_path / "o")
    assert_user_error(refused, "--workers: expected a number >= 1, got 0")


def test_sweep_ls_compare_export(tmp_path, fake_engine):
    exp_file = tmp_path / "e.yaml"
    exp_file.write_text("name: cmp\nepochs: 2\nsweep:\n  norm: [none, batch]\n  seed: [0, 2, 3]\n")
    result = invoke("sweep", exp_file, "--out", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    assert "6 finished" in result.stderr

    again = invoke("sweep", exp_file, "--out", tmp_path, "-q")
    assert again.exit_code == 0 and "6 skipped" in again.stderr

    listed = json.loads(invoke("ls", "--json", "--out", tmp_path).stdout)
    assert listed == {"cmp": {"finished": 6}}
    assert "cmp: 6 runs (6 finished)" in invoke("ls", "--out", tmp_path).stdout
    runs = json.loads(invoke("ls", "cmp", "--json", "--out", tmp_path).stdout)
    assert len(runs) == 6 and {r["status"] for r in runs} == {"finished"}

    table = invoke("compare", "cmp", "--out", tmp_path)
    assert table.exit_code == 0, table.output
    # the fake's test_acc is 0.5 + 0.01 * seed + 0.001 * 64 -> mean over seeds 0, 2, 3
    mean = 0.5 + 0.01 * (0 + 2 + 3) / 3 + 0.064
    assert f"{mean:.4f} +-" in table.stdout and "(n=3)" in table.stdout
    assert "none" in table.stdout and "batch" in table.stdout

    for fmt in ("csv", "parquet"):
        exported = invoke("export", "cmp", "--format", fmt, "--out", tmp_path)
        assert exported.exit_code == 0, exported.output
        paths = [Path(p) for p in exported.stdout.split()]
        assert [p.name for p in paths] == [f"cmp_runs.{fmt}", f"cmp_metrics.{fmt}"]
        read = pd.read_csv if fmt == "csv" else pd.read_parquet
        frame = read(paths[0])
        assert len(frame) == 6 and {"run_id", "norm", "seed", "optim.weight_decay"} <= set(frame.columns)
        assert len(read(paths[1])) == 6 * 2 * 2


def test_failed_runs_exit_1_and_are_reported(tmp_path, fake_engine):
    result = invoke("sweep", "seed=0,1", "--out", tmp_path, "-q")
    assert result.exit_code == 1
    assert "1 failed" in result.stderr and "RuntimeError: planted failure for seed 1" in result.stderr


def test_run_json_prints_the_final_metrics(tmp_path, fake_engine):
    result = invoke("run", "seed=2", "epochs=1", "--json", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["status"] == "finished" and payload["test_acc"] == pytest.approx(0.5 + 0.02 + 0.064)
    failed = invoke("run", "seed=1", "--json", "--out", tmp_path)
    assert failed.exit_code == 1
    assert json.loads(failed.stdout)["error"] == "RuntimeError: planted failure for seed 1"


def test_run_of_a_config_that_failed_before_says_so_and_can_retry(tmp_path, monkeypatch):
    monkeypatch.setattr(execute, "default_run_fn", fakes.flaky_fit)
    assert invoke("run", "seed=1", "--out", tmp_path, "-q").exit_code == 1
    again = invoke("run", "seed=1", "--out", tmp_path, "-q")
    assert again.exit_code == 1 and "1 of them failed before (--retry-failed" in again.stderr
    monkeypatch.setattr(execute, "default_run_fn", fakes.fake_fit)  # the bug is fixed
    retried = invoke("run", "seed=1", "--retry-failed", "--json", "--out", tmp_path)
    assert retried.exit_code == 0 and json.loads(retried.stdout)["status"] == "finished"


def test_data_info(tmp_path):
    result = invoke("data", "info", "synthetic")
    assert result.exit_code == 0 and "synthetic" in result.stdout
    assert_user_error(invoke("data", "info", "cifar"), "unknown dataset 'cifar'", "cifar10")


def test_study_and_report_delegate(tmp_path, monkeypatch):
    from normlab.commands import report as report_command
    from normlab.commands import study as study_command

    calls = []
    monkeypatch.setattr(study_command, "run_study", lambda **kw: calls.append(kw) or tmp_path / "rep")
    monkeypatch.setattr(
        report_command, "write_report", lambda out, exp: calls.append((out, exp)) or tmp_path / "r.html"
    )
    monkeypatch.setattr(report_command, "write_study_report", lambda out, exp: calls.append(("study", exp)) or tmp_path)
    result = invoke("study", "--quick", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    # both cores by default: two worker processes
    assert calls[0] == {
        "dataset": "mnist1d",
        "quick": True,
        "out": str(tmp_path),
        "executor": "process",
        "workers": 2,
        "tier": "default",
    }
    assert str(tmp_path / "rep" / "report.html") in result.stdout
    result = invoke("report", "exp", "--out", tmp_path)
    assert result.exit_code == 0 and calls[1] == (tmp_path, "exp")
    monkeypatch.setattr(report_command, "stored_study", lambda out, name: name == "study")
    result = invoke("report", "study", "--out", tmp_path)
    assert result.exit_code == 0 and calls[2] == ("study", "study")


def test_python_dash_m_normlab_runs_one_real_training_run(tmp_path):
    """End to end through the real engine: a few optimizer steps of the seed's MLP."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "normlab",
            "run",
            "max_steps=3",
            "epochs=1",
            "dataset=synthetic",
            "--json",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["status"] in ("finished", "diverged") and 0.0 <= payload["test_acc"] <= 1.0
    assert (tmp_path / "normlab.db").exists()
    assert (tmp_path / "runs" / payload["run_id"] / "config.json").exists()


def test_run_nproc_trains_one_data_parallel_run_stored_once(tmp_path):
    """`--nproc 2` goes through train.distributed.launch (2 gloo processes) and is one run."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["max_steps=3", "epochs=1", "dataset=synthetic", "batch_size=16", "sync_bn=true"]
    proc = subprocess.run(
        [sys.executable, "-m", "normlab", "run", *args, "--nproc", "2", "--json", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["status"] == "finished", payload
    from normlab.experiments.store import Store

    runs = Store(tmp_path).runs_frame("run")
    assert list(runs["run_id"]) == [payload["run_id"]]
    assert int(runs["nproc"].iloc[0]) == 2 and bool(runs["sync_bn"].iloc[0])
    metrics = Store(tmp_path).metrics_frame("run", names=["bn_batch_size", "global_batch_size"])
    # Written once (rank 0): one row per name, and SyncBN normalizes over the global batch.
    assert sorted(metrics["name"]) == ["bn_batch_size", "global_batch_size"]
    assert set(metrics["value"]) == {16.0}


def test_torchrun_trains_one_run_and_a_rerun_returns_on_every_rank(tmp_path):
    """`torchrun -m normlab run`: rank 0 stores the run; on a rerun rank 0 shows the stored
    result and the other rank must not wait for it in a collective (that would hang)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "normlab",
        "run",
        "max_steps=2",
        "epochs=1",
        "dataset=synthetic",
        "batch_size=16",
        "nproc=2",
        "--json",
        "--out",
        str(tmp_path),
    ]
    for _ in range(2):  # the second is a rerun: every rank must return
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        payloads = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        assert len(payloads) == 1 and payloads[0]["status"] == "finished"  # rank 0 alone prints
    from normlab.experiments.store import Store

    assert len(Store(tmp_path).runs_frame("run")) == 1


@pytest.fixture
def threads_seen(monkeypatch):
    """Runs use the fake engine and record torch's intra-op thread count while they train."""
    import torch

    seen = []

    def recording_fit(config, *, on_metrics, checkpoint_path):
        seen.append(torch.get_num_threads())
        return fakes.flaky_fit(config, on_metrics=on_metrics, checkpoint_path=checkpoint_path)

    monkeypatch.setattr(execute, "default_run_fn", recording_fit)
    torch.set_num_threads(3)  # the caller's setting, to be restored (conftest resets it after)
    return seen


def test_run_threads_sets_the_count_for_the_run_and_restores_it(tmp_path, threads_seen):
    import torch

    ids = []
    for out, extra in (("a", ["--threads", "2"]), ("b", []), ("c", ["--threads", "0"])):
        result = invoke("run", "seed=2", "epochs=1", "--json", "--out", tmp_path / out, *extra)
        assert result.exit_code == 0, result.output
        ids.append(json.loads(result.stdout)["run_id"])
        assert torch.get_num_threads() == 3
    # --threads 2, the default (1, as the study), --threads 0 (keeps the caller's 3)
    assert threads_seen == [2, 1, 3]
    assert len(set(ids)) == 1  # threads are not part of the run id
    failed = invoke("run", "seed=1", "--threads", "2", "--out", tmp_path / "d", "-q")
    assert failed.exit_code == 1 and torch.get_num_threads() == 3  # restored after a failed run too
    assert "--threads" in invoke("run", "--help").output


def test_sweep_threads_for_the_local_executor(tmp_path, threads_seen):
    import torch

    assert invoke("sweep", "seed=0,2", "--threads", "2", "--out", tmp_path, "-q").exit_code == 0
    assert threads_seen == [2, 2] and torch.get_num_threads() == 3
    assert invoke("sweep", "seed=3", "--out", tmp_path, "-q").exit_code == 0
    assert threads_seen[-1] == 1


@pytest.mark.parametrize(
    "args, texts",
    [
        (["run", "--threads", "-1"], ["--threads: expected a number of threads >= 0", "got -1"]),
        (["sweep", "--threads", "-1", "--dry-run"], ["--threads: expected a number of threads >= 0"]),
    ],
)
def test_bad_threads_exit_2(tmp_path, threads_seen, args, texts):
    assert_user_error(invoke(*args, "--out", tmp_path / "out"), *texts)
    assert threads_seen == [] and not (tmp_path / "out" / "normlab.db").exists()
