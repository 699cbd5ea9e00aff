"""A damaged, concurrently created or full results database: one message naming the file,
never a raw sqlite traceback, and never a half-written store."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest
from typer.testing import CliRunner

from clitools import assert_user_error
from normlab import cli
from normlab.experiments import execute
from normlab.experiments import store as store_module
from normlab.experiments.config import load_experiment
from normlab.experiments.errors import StoreError
from normlab.experiments.runner import run_experiment
from normlab.experiments.store import Store

from . import fakes

ARGS = ["seed=0,1,2", "norm=none,batch", "epochs=40"]


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A results folder with 6 finished runs of 40 epochs of fake metrics (a few pages)."""
    monkeypatch.setattr(execute, "default_run_fn", fakes.fake_fit)
    out = tmp_path / "res"
    assert invoke("sweep", *ARGS, "--name", "exp", "--out", out, "-q").exit_code == 0
    return out


def test_random_bytes_in_the_middle_are_one_message_naming_the_file(results):
    db = results / "normlab.db"
    data = bytearray(db.read_bytes())
    assert len(data) > 8 * 4096
    middle = len(data) // 2
    data[middle : middle + 3000] = bytes((i * 37 + 11) % 256 for i in range(3000))
    db.write_bytes(bytes(data))
    for command in (["ls"], ["compare", "exp"], ["export", "exp"], ["sweep", *ARGS, "--name", "exp", "-q"]):
        result = invoke(*command, "--out", results)
        assert_user_error(result, repr(str(db)), "damaged")


def test_a_reader_opens_read_only_and_changes_nothing(results):
    db = results / "normlab.db"
    before = db.read_bytes()
    with Store.open(results, create=False) as store:
        assert store.experiments() == ["exp"]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store._conn.execute("DELETE FROM metrics")
    assert invoke("ls", "--out", results).exit_code == 0
    assert db.read_bytes() == before


def _open_store(path, barrier):
    barrier.wait()
    Store(path).close()


def test_processes_creating_one_store_at_once_all_succeed(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for attempt in range(3):
        path = tmp_path / f"s{attempt}" / "normlab.db"
        path.parent.mkdir()
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_store, args=(path, barrier)) for _ in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        with Store(path, create=False) as store:
            assert store.experiments() == []


def test_a_full_disk_while_storing_is_one_message_and_the_store_stays_consistent(tmp_path, monkeypatch):
    monkeypatch.setattr(execute, "default_run_fn", fakes.fake_fit)

    @store_module._sqlite_errors
    def full(self, run_id, rows):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "add_metrics", full)
    result = invoke("sweep", "seed=0,1", "--out", tmp_path, "-q")
    assert_user_error(result, "no space left for the results database", "free disk space")
    monkeypatch.undo()
    monkeypatch.setattr(execute, "default_run_fn", fakes.fake_fit)
    with Store.open(tmp_path) as store:  # intact (the writer's integrity check) and resumable
        assert set(store.run_status([r.run_id for r in load_experiment(None, ["seed=0,1"]).runs]).values()) <= {
            "queued",
            "running",
        }
    assert invoke("sweep", "seed=0,1", "--out", tmp_path, "-q").exit_code == 0


@pytest.mark.parametrize("executor", ["local", "process"])
def test_a_full_disk_while_checkpointing_stops_the_sweep_with_one_message(tmp_path, executor):
    exp = load_experiment(None, ["dataset=synthetic", "epochs=2", "seed=0,1", "hidden=[16]"], name="full")
    with pytest.raises(Exception) as err:
        run_experiment(exp, tmp_path, executor=executor, run_fn=fakes.disk_full_fit, progress=False)
    assert type(err.value).__name__ == "ResourceError"
    assert "no space left on the device" in str(err.value) and "resumes" in str(err.value)
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]  # temporaries removed
    with Store.open(tmp_path) as store:
        statuses = store.run_status([r.run_id for r in exp.runs])
        assert "failed" not in statuses.values() and "running" not in statuses.values()
    summary = run_experiment(exp, tmp_path, executor=executor, run_fn=fakes.fake_fit, progress=False)
    assert summary.ok


def test_store_errors_name_the_file(tmp_path):
    (tmp_path / "normlab.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 5000)
    with pytest.raises(StoreError, match="normlab.db"):
        Store.open(tmp_path)
