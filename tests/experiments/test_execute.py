"""execute_run: the events one run produces, whatever process it runs in."""

from __future__ import annotations

from normlab.experiments.config import load_experiment
from normlab.experiments.execute import RunTask, execute_run

from . import fakes


def task_for(tmp_path, overrides=("epochs=3",)):
    run = load_experiment(None, list(overrides)).runs[0]
    return RunTask(run.run_id, run.config.resolved(), str(tmp_path / run.run_id)), run.config


def test_events_of_a_finished_run(tmp_path):
    task, config = task_for(tmp_path)
    events = []
    execute_run(task, events.append, fakes.fake_fit)
    kinds = [e[0] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and set(kinds[1:-1]) == {"metrics"}
    _, run_id, env, resumed, resume_step = events[0]
    assert run_id == task.run_id and resumed is False and resume_step is None
    assert set(env) == {"python", "torch", "normlab", "git_commit", "device", "hostname", "torch_threads"}
    rows = [row for e in events if e[0] == "metrics" for row in e[2]]
    assert sorted((step, epoch, name) for step, epoch, name, _ in rows) == sorted(
        (10 * e, e, n) for e in (1, 2, 3) for n in ("train_loss", "test_acc")
    )
    assert events[-1] == ("end", task.run_id, "finished", {"test_acc": fakes.expected_acc(config)}, 30, 0.01, None)


def test_a_raising_run_is_a_failed_end_event_with_traceback(tmp_path):
    task, _ = task_for(tmp_path, ["seed=1"])
    events = []
    execute_run(task, events.append, fakes.flaky_fit)
    end = events[-1]
    assert end[:3] == ("end", task.run_id, "failed")
    assert "Traceback" in end[-1] and "planted failure for seed 1" in end[-1]
    assert any(e[0] == "metrics" for e in events)  # what it measured before failing is kept


def test_a_wrong_status_is_a_failure(tmp_path):
    task, _ = task_for(tmp_path)
    events = []
    execute_run(task, events.append, fakes.bad_status_fit)
    assert events[-1][2] == "failed" and "returned status 'done?'" in events[-1][-1]


def test_an_existing_checkpoint_means_resume(tmp_path):
    task, _ = task_for(tmp_path)
    execute_run(task, lambda e: None, fakes.fake_fit)
    events = []
    execute_run(task, events.append, fakes.fake_fit)
    assert events[0][3] is True


def test_a_metric_without_value_is_kept_as_nan(tmp_path):
    import math

    def fit(config, *, on_metrics, checkpoint_path):
        on_metrics(0, 0, {"test_acc": None, "lr": 1})
        return fakes.FakeResult("finished", {}, 0, 0.0)

    task, _ = task_for(tmp_path)
    events = []
    execute_run(task, events.append, fit)
    rows = {name: value for e in events if e[0] == "metrics" for _, _, name, value in e[2]}
    assert math.isnan(rows["test_acc"]) and rows["lr"] == 1.0


def test_commit_emits_buffered_rows_then_waits_for_the_parent(tmp_path):
    task, _ = task_for(tmp_path, ["epochs=2"])
    log = []

    def fit(config, *, on_metrics, checkpoint_path):
        on_metrics(1, 1, {"train_loss": 1.0})  # buffered: less than FLUSH_SECONDS went by
        on_metrics.commit()
        log.append("checkpoint")
        return fakes.FakeResult("finished", {}, 1, 0.0)

    execute_run(task, lambda e: log.append(e[0]), fit, sync=lambda: log.append("sync"))
    assert log == ["start", "metrics", "sync", "checkpoint", "end"]


def test_a_resume_reports_its_checkpoint_step(tmp_path):
    from normlab.train.checkpoint import save_checkpoint

    task, _ = task_for(tmp_path)
    save_checkpoint(task.checkpoint_path, {"run_id": task.run_id, "status": "running", "step": 42})
    events = []
    execute_run(task, events.append, fakes.bad_status_fit)
    assert events[0][3:] == (True, 42)
    task.checkpoint_path.write_bytes(b"damaged")  # unreadable: no step (the engine reports it)
    events = []
    execute_run(task, events.append, fakes.bad_status_fit)
    assert events[0][3:] == (True, None)
