"""Sweep executors: a process pool of 2 workers (and one killed mid-run), Ray on a local 2-CPU instance."""

from __future__ import annotations

import os
import signal
import sys
import threading

import pytest

from normlab.experiments.config import load_experiment
from normlab.experiments.errors import ExecutorError
from normlab.experiments.executors import import_ray
from normlab.experiments.runner import run_experiment
from normlab.experiments.store import Store

from . import fakes
from .test_runner import checkpoint_epoch, lines, wait_for


def test_process_executor_two_workers_crash_isolation_and_sigkill_of_a_worker(tmp_path):
    """4 runs on 2 workers: seed 1 raises, one worker is SIGKILLed mid-run and replaced; the
    rerun resumes the killed run from its checkpoint and every run completes exactly once."""
    exp = load_experiment(None, ["seed=0,1,2,3", "epochs=4"], name="pool")
    dirs = [tmp_path / "runs" / r.run_id for r in exp.runs]
    killed: list[int] = []

    def killer():
        def ready():
            return next((d for d in dirs if checkpoint_epoch(d) >= 1 and (d / "pid").exists()), None)

        wait_for(lambda: ready() is not None)
        victim = ready()
        pid = int((victim / "pid").read_text())
        assert pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        killed.append(dirs.index(victim))

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    summary = run_experiment(exp, tmp_path, executor="process", workers=2, run_fn=fakes.slow_flaky_fit, progress=False)
    thread.join(timeout=60)
    assert len(killed) == 1
    victim = exp.runs[killed[0]].run_id
    outcome = {o.run_id: o for o in summary.outcomes}
    assert outcome[victim].status == "queued" and "died" in outcome[victim].error
    assert outcome[exp.runs[1].run_id].status == "failed"
    assert "RuntimeError: planted failure for seed 1" in outcome[exp.runs[1].run_id].error
    assert sum(o.status == "finished" for o in summary.outcomes) == 2
    assert "1 interrupted" in str(summary) and "1 failed" in str(summary)
    pids = {int((d / "pid").read_text()) for i, d in enumerate(dirs) if i != 1}
    assert os.getpid() not in pids and len(pids) >= 2  # executed in (several) worker processes

    rerun = run_experiment(exp, tmp_path, run_fn=fakes.fake_fit, progress=False)
    assert rerun.count("finished") == 1 and rerun.skipped == 3
    for i, d in enumerate(dirs):
        assert lines(d / "completions.log") == ([] if i == 1 else ["done"])
    starts = lines(dirs[killed[0]] / "starts.log")
    assert len(starts) == 2 and int(starts[1].split("=")[1]) >= 2  # resumed from its checkpoint
    with Store.open(tmp_path) as store:
        metrics = store.metrics_frame("pool", names=["test_acc"])
        assert not metrics.duplicated(["run_id", "step"]).any()
        assert sorted(metrics[metrics.run_id == victim]["epoch"]) == [1, 2, 3, 4]
        runs = store.runs_frame("pool").set_index("seed")
        assert runs.loc[3, "final.test_acc"] == fakes.expected_acc(exp.runs[3].config)


def test_missing_ray_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(ExecutorError, match=r"pip install 'normlab\[ray\]'"):
        import_ray()
    with pytest.raises(ExecutorError, match="normlab\\[ray\\]"):
        run_experiment(load_experiment(None, []), tmp_path, executor="ray", progress=False)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    # Ray workers must import the fake run functions (tests/experiments/fakes.py) by name.
    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([tests_dir] + ([old] if old else []))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def test_ray_executor_on_a_local_two_cpu_instance(local_ray, tmp_path):
    exp = load_experiment(None, ["seed=0,1", "epochs=2"], name="ray")
    summary = run_experiment(exp, tmp_path, executor="ray", run_fn=fakes.flaky_fit, progress=False)
    assert [o.status for o in summary.outcomes] == ["finished", "failed"]
    assert local_ray.is_initialized()  # a Ray the caller started is left running
    with Store.open(tmp_path) as store:
        runs = store.runs_frame("ray").set_index("seed")
        assert "planted failure" in runs.loc[1, "error"]
        assert runs.loc[0, "final.test_acc"] == fakes.expected_acc(exp.runs[0].config)
        assert runs.loc[0, "env.python"]  # provenance measured on the Ray worker
        assert len(store.metrics_frame("ray", names=["test_acc"])) == 2
    assert lines(tmp_path / "runs" / exp.runs[0].run_id / "completions.log") == ["done"]
