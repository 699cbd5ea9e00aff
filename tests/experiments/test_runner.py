"""run_experiment: skip what is done, isolate crashes, retry on request, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from normlab.experiments.config import load_experiment
from normlab.experiments.errors import ExecutorError, StoreError
from normlab.experiments.runner import LOCK_NAME, run_experiment
from normlab.experiments.store import Store

from . import fakes


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_local_runs_everything_stores_it_and_skips_it_next_time(tmp_path):
    exp = load_experiment(None, ["norm=none,batch", "seed=0,1", "epochs=2"], name="loc")
    summary = run_experiment(exp, tmp_path, run_fn=fakes.fake_fit, progress=False)
    assert summary.ok and summary.count("finished") == 4 and summary.skipped == 0
    for run in exp.runs:
        run_dir = tmp_path / "runs" / run.run_id
        assert json.loads((run_dir / "config.json").read_text()) == run.config.resolved()
        assert lines(run_dir / "completions.log") == ["done"]
    with Store.open(tmp_path) as store:
        runs = store.runs_frame("loc")
        assert set(runs["status"]) == {"finished"}
        assert runs["final.test_acc"].tolist() == [fakes.expected_acc(r.config) for r in exp.runs]
        assert len(store.metrics_frame("loc")) == 4 * 2 * 2
        arts = store._conn.execute("SELECT COUNT(*) FROM artifacts WHERE kind = 'checkpoint'").fetchone()[0]
        assert arts == 4

    again = run_experiment(exp, tmp_path, run_fn=fakes.fake_fit, progress=False)
    assert again.skipped == 4 and again.count("finished") == 0
    assert all(lines(tmp_path / "runs" / r.run_id / "completions.log") == ["done"] for r in exp.runs)
    assert "4 skipped" in str(again)


def test_a_crashing_run_is_stored_failed_and_the_others_go_on(tmp_path):
    exp = load_experiment(None, ["seed=0,1,2"], name="crash")
    summary = run_experiment(exp, tmp_path, run_fn=fakes.flaky_fit, progress=False)
    status = {o.run_id: o.status for o in summary.outcomes}
    failed = exp.runs[1].run_id
    assert status.pop(failed) == "failed" and set(status.values()) == {"finished"}
    assert not summary.ok and "1 failed" in str(summary)
    with Store.open(tmp_path) as store:
        row = store.runs_frame("crash").set_index("run_id").loc[failed]
        assert "planted failure for seed 1" in row["error"] and "Traceback" in row["error"]

    # rerun: the failed run is not retried unless asked
    rerun = run_experiment(exp, tmp_path, run_fn=fakes.fake_fit, progress=False)
    assert rerun.skipped == 3 and not rerun.ok
    assert "1 of them failed before (--retry-failed" in str(rerun)  # why the sweep is not ok
    retried = run_experiment(exp, tmp_path, run_fn=fakes.fake_fit, progress=False, retry_failed=True)
    assert retried.ok and retried.count("finished") == 1 and retried.skipped == 2
    with Store.open(tmp_path) as store:
        row = store.runs_frame("crash").set_index("run_id").loc[failed]
        assert row["status"] == "finished" and row["error"] is None
        # the failed try's partial metrics were dropped with the fresh start
        metrics = store.metrics_frame("crash")
        assert metrics[metrics.run_id == failed]["value"].tolist().count(2.0) == 0


def test_a_diverged_run_is_a_result_not_a_failure(tmp_path):
    exp = load_experiment(None, ["lr=10"], name="div")
    summary = run_experiment(exp, tmp_path, run_fn=fakes.diverging_fit, progress=False)
    assert summary.ok and summary.outcomes[0].status == "diverged"
    assert run_experiment(exp, tmp_path, run_fn=fakes.fake_fit, progress=False).skipped == 1


def test_ray_is_not_started_when_every_run_already_has_a_result(tmp_path, monkeypatch):
    from normlab.experiments import executors, runner

    exp = load_experiment(None, ["seed=0,1"], name="done")
    assert run_experiment(exp, tmp_path, run_fn=fakes.fake_fit, progress=False).ok

    def no_ray():
        raise AssertionError("Ray started with nothing to run")

    monkeypatch.setattr(runner, "import_ray", lambda: None)  # the up-front "is Ray installed" check
    monkeypatch.setattr(executors, "import_ray", no_ray)
    again = run_experiment(exp, tmp_path, executor="ray", run_fn=fakes.fake_fit, progress=False)
    assert again.ok and again.skipped == 2


def test_bad_executor_and_workers_are_clear_errors(tmp_path):
    exp = load_experiment(None, [])
    with pytest.raises(ExecutorError, match="local, process, ray.*'gpu'"):
        run_experiment(exp, tmp_path, executor="gpu")
    with pytest.raises(ExecutorError, match="--workers"):
        run_experiment(exp, tmp_path, executor="process", workers=0)
    assert not (tmp_path / "normlab.db").exists()


def test_a_second_process_on_the_same_folder_is_refused(tmp_path):
    import fcntl

    # flock conflicts between two open files even in one process: this stands for another sweep.
    with open(tmp_path / LOCK_NAME, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write("4242")
        handle.flush()
        with pytest.raises(StoreError, match=r"another normlab process \(pid 4242\)"):
            run_experiment(load_experiment(None, []), tmp_path, run_fn=fakes.fake_fit, progress=False)
    assert not (tmp_path / "normlab.db").exists()
    summary = run_experiment(load_experiment(None, []), tmp_path, run_fn=fakes.fake_fit, progress=False)
    assert summary.ok  # the lock is free again


def test_an_unusable_results_folder_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StoreError, match="cannot use .* as the results folder"):
        run_experiment(load_experiment(None, []), tmp_path / "file", run_fn=fakes.fake_fit, progress=False)


SCRIPT = """
import sys
sys.path[:0] = {path!r}
from normlab.experiments import load_experiment, run_experiment
from experiments.fakes import slow_fit
run_experiment(load_experiment(None, ["seed=0,1", "epochs=4"], name="kill"), {out!r}, run_fn=slow_fit, progress=False)
"""


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def checkpoint_epoch(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "checkpoint.pt").read_text())["epoch"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_sigkill_of_the_sweep_then_rerun_completes_every_run_exactly_once(tmp_path):
    exp = load_experiment(None, ["seed=0,1", "epochs=4"], name="kill")
    first, second = (tmp_path / "runs" / r.run_id for r in exp.runs)
    tests_dir = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT.format(path=[tests_dir], out=str(tmp_path))])
    try:
        # kill after its first checkpoint: 3 epochs (1.2 s) of margin before it could end
        wait_for(lambda: checkpoint_epoch(first) >= 1 or proc.poll() is not None)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with Store.open(tmp_path) as store:
        assert store.run_status([exp.runs[0].run_id])[exp.runs[0].run_id] == "running"

    summary = run_experiment(exp, tmp_path, run_fn=fakes.fake_fit, progress=False)
    assert summary.ok and summary.count("finished") == 2
    assert lines(first / "completions.log") == ["done"] and lines(second / "completions.log") == ["done"]
    starts = lines(first / "starts.log")
    assert len(starts) == 2 and starts[0] == "start epoch=1"
    assert int(starts[1].split("=")[1]) >= 2  # resumed from its checkpoint, not from scratch
    with Store.open(tmp_path) as store:
        metrics = store.metrics_frame("kill")
        killed = metrics[metrics.run_id == exp.runs[0].run_id]
        assert sorted(killed[killed.name == "test_acc"]["epoch"]) == [1, 2, 3, 4]
        assert not metrics.duplicated(["run_id", "name", "step"]).any()
        attempts = dict(store._conn.execute("SELECT run_id, attempts FROM runs"))
        assert attempts == {exp.runs[0].run_id: 2, exp.runs[1].run_id: 1}


def test_a_run_this_machine_cannot_run_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    import normlab.train.engine as engine
    from normlab.experiments.errors import ConfigError

    exp = load_experiment(None, ["seed=0,1", "cuda_graph=true"], name="gpu")
    out = tmp_path / "out"
    with pytest.raises(
        ConfigError,
        match=r"2 run\(s\) of 'gpu' cannot run on this machine .*"
        r"cuda_graph=true .* is a GPU option, but the run is on cpu",
    ):
        run_experiment(exp, out, run_fn=fakes.fake_fit, progress=False)
    assert not out.exists()  # nothing written: no store, no run folders

    # stored results are not checked again: a finished sweep copied from a GPU machine lists
    # fine on a CPU one (here the first run pretends to be such a machine)
    monkeypatch.setattr(engine, "check_runnable_here", lambda config: None)
    assert run_experiment(exp, out, run_fn=fakes.fake_fit, progress=False).ok
    monkeypatch.undo()
    again = run_experiment(exp, out, run_fn=fakes.fake_fit, progress=False)
    assert again.skipped == 2
    # a new seed would execute, so it is checked (and refused) again, with the store untouched
    more = load_experiment(None, ["seed=0,1,2", "cuda_graph=true"], name="gpu")
    with pytest.raises(ConfigError, match=r"1 run\(s\) of 'gpu' cannot run"):
        run_experiment(more, out, run_fn=fakes.fake_fit, progress=False)
    with Store.open(out) as store:
        assert len(store.runs_frame("gpu")) == 2


def test_device_checks_are_left_to_the_cluster_on_ray(tmp_path, monkeypatch):
    from normlab.experiments import runner

    calls = []
    monkeypatch.setattr(runner, "check_runnable_here", lambda *a: calls.append(a))
    exp = load_experiment(None, ["seed=0"], name="loc")
    run_experiment(exp, tmp_path, run_fn=fakes.fake_fit, progress=False)
    assert len(calls) == 1  # local: checked here
    ran = []
    monkeypatch.setattr(runner, "import_ray", lambda: None)
    monkeypatch.setattr(runner, "run_ray", lambda tasks, *a, **k: ran.append(len(tasks)))
    run_experiment(
        load_experiment(None, ["seed=5"], name="ray"), tmp_path, executor="ray", run_fn=fakes.fake_fit, progress=False
    )
    assert ran == [1] and len(calls) == 1  # Ray: the cluster's machines run it, not checked here


@pytest.mark.parametrize("executor", ["local", "process"])
def test_each_run_trains_with_the_asked_threads_on_every_executor(tmp_path, executor):
    # one default on every executor (1): a config's CPU numbers do not depend on the executor
    import torch

    before = torch.get_num_threads()
    exp = load_experiment(None, ["seed=0,1"], name="t")
    assert run_experiment(exp, tmp_path, executor=executor, run_fn=fakes.fake_fit, progress=False).ok
    more = load_experiment(None, ["seed=2"], name="t2")
    assert run_experiment(more, tmp_path, executor=executor, run_fn=fakes.fake_fit, progress=False, threads=2).ok
    assert torch.get_num_threads() == before  # restored
    with Store.open(tmp_path) as store:
        assert store.runs_frame("t")["env.torch_threads"].tolist() == [1, 1]
        assert store.runs_frame("t2")["env.torch_threads"].tolist() == [2]


def test_threads_must_be_a_count(tmp_path):
    from normlab.experiments.errors import ConfigError

    with pytest.raises(ConfigError, match="--threads: expected a number of threads >= 0.*got -1"):
        run_experiment(load_experiment(None, [], name="x"), tmp_path, threads=-1)
    assert not (tmp_path / "normlab.db").exists()
