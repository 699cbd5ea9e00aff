"""The SQLite store: round trip, frames for the analysis layer, schema version, atomic writes."""

from __future__ import annotations

import sqlite3

import pytest

from normlab.experiments.config import load_experiment
from normlab.experiments.store import SCHEMA_VERSION, Store, StoreError

ENV = {
    "python": "3.x",
    "torch": "2.x",
    "normlab": "0.1.0",
    "git_commit": "abc",
    "device": "cpu (x86_64)",
    "hostname": "h",
}


@pytest.fixture
def experiment():
    return load_experiment(None, ["norm=none,batch", "seed=0,1", "optim.weight_decay=0.01"], name="exp")


def test_round_trip_runs_and_metrics(tmp_path, experiment):
    with Store.open(tmp_path) as store:
        store.add_experiment(experiment)
        first = experiment.runs[0].run_id
        store.mark_running(first, ENV, fresh=True)
        store.add_metrics(first, [(10, 1, "train_loss", 0.5), (20, 2, "train_loss", 0.25), (20, 2, "test_acc", 0.9)])
        store.finish_run(first, "finished", final={"test_acc": 0.9}, steps=20, seconds=1.5)
        store.add_artifact(first, "checkpoint", f"runs/{first}/checkpoint.pt")

    assert Store(tmp_path).path == tmp_path / "normlab.db"  # the folder works too
    with Store(tmp_path / "normlab.db", create=False) as store:  # a fresh reader
        assert store.experiments() == ["exp"]
        runs = store.runs_frame("exp")
        head = ["run_id", "experiment", "status", "group", "started_at", "finished_at", "seconds", "error"]
        assert list(runs.columns[: len(head)]) == head
        assert len(runs) == 4
        assert set(runs["status"]) == {"finished", "queued"}
        row = runs.set_index("run_id").loc[first]
        assert row["status"] == "finished" and row["seconds"] == 1.5 and row["final.test_acc"] == 0.9
        assert row["env.torch"] == "2.x" and row["env.git_commit"] == "abc"
        # config keys flattened with dots, values as configured
        assert row["norm"] == experiment.runs[0].config.norm
        assert (runs["optim.weight_decay"] == 0.01).all()
        assert sorted(runs["seed"]) == [0, 0, 1, 1]
        assert runs["optim.betas"].iloc[0] == "[0.9,0.999]"  # lists as JSON text

        metrics = store.metrics_frame("exp")
        assert list(metrics.columns) == ["run_id", "step", "epoch", "name", "value"]
        assert len(metrics) == 3 and (metrics["run_id"] == first).all()
        only = store.metrics_frame("exp", names=["test_acc"])
        assert only[["step", "epoch", "value"]].values.tolist() == [[20, 2, 0.9]]


def test_metric_re_emitted_after_resume_replaces_never_duplicates(tmp_path, experiment):
    with Store.open(tmp_path) as store:
        store.add_experiment(experiment)
        rid = experiment.runs[0].run_id
        store.add_metrics(rid, [(10, 1, "train_loss", 0.5)])
        store.add_metrics(rid, [(10, 1, "train_loss", 0.4)])
        frame = store.metrics_frame("exp")
        assert frame["value"].tolist() == [0.4]
        store.mark_running(rid, ENV, fresh=True)  # a fresh start forgets earlier tries
        assert store.metrics_frame("exp").empty


def test_same_run_in_two_experiments_and_groups_is_stored_once(tmp_path):
    a = load_experiment(None, ["seed=0"], name="a")
    b = load_experiment(None, ["seed=0,1"], name="b")
    with Store.open(tmp_path) as store:
        store.add_experiment(a)
        store.add_experiment(b)
        store.add_experiment(b)  # registering again changes nothing
        assert store.experiments() == ["a", "b"]
        assert len(store.runs_frame("a")) == 1 and len(store.runs_frame("b")) == 2
        count = store._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        assert count == 2


def test_unknown_experiment_and_missing_store_are_clear_errors(tmp_path, experiment):
    with pytest.raises(StoreError, match="no results store"):
        Store.open(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()
    with Store.open(tmp_path) as store:
        store.add_experiment(experiment)
        with pytest.raises(StoreError, match="no experiment 'exq'.*known: exp"):
            store.runs_frame("exq")


def test_newer_schema_version_is_refused(tmp_path):
    Store.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "normlab.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match=f"newer normlab.*v{SCHEMA_VERSION + 1}"):
        Store.open(tmp_path)


def test_a_version_1_store_is_upgraded_in_place(tmp_path, experiment):
    # a v1 results folder (before runs recorded torch_threads and data_fingerprint) keeps its
    # runs and gains the columns
    with Store.open(tmp_path) as store:
        store.add_experiment(experiment)
        first = experiment.runs[0].run_id
        store.mark_running(first, ENV, fresh=True)
    conn = sqlite3.connect(tmp_path / "normlab.db")
    conn.execute("ALTER TABLE runs DROP COLUMN torch_threads")
    conn.execute("ALTER TABLE runs DROP COLUMN data_fingerprint")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with Store.open(tmp_path) as store:
        runs = store.runs_frame("exp")
        assert runs.loc[runs["run_id"] == first, "env.hostname"].item() == "h"  # kept
        assert runs["env.torch_threads"].isna().all()  # unknown for the old runs
        assert runs["env.data_fingerprint"].isna().all()
        store.mark_running(experiment.runs[1].run_id, {**ENV, "torch_threads": 2}, fresh=True)
        runs = store.runs_frame("exp")
        assert runs.loc[runs["run_id"] == experiment.runs[1].run_id, "env.torch_threads"].item() == 2
    conn = sqlite3.connect(tmp_path / "normlab.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    conn.close()


def test_foreign_database_and_non_database_are_refused(tmp_path):
    conn = sqlite3.connect(tmp_path / "normlab.db")
    conn.execute("CREATE TABLE other(x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a normlab results database"):
        Store.open(tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "normlab.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a normlab results database"):
        Store.open(tmp_path / "junk")


def test_a_failed_write_leaves_no_half_row(tmp_path, experiment):
    with Store.open(tmp_path) as store:
        store.add_experiment(experiment)
        rid = experiment.runs[0].run_id
        with pytest.raises(ValueError):  # non-numeric value in the middle of a batch
            store.add_metrics(rid, [(1, 1, "a", 1.0), (2, 1, "a", "x"), (3, 1, "a", 3.0)])
        assert store.metrics_frame("exp").empty
        with pytest.raises(sqlite3.IntegrityError):  # status outside the CHECK list
            store._conn.execute("UPDATE runs SET status = 'weird' WHERE run_id = ?", (rid,))
        assert store.run_status([rid]) == {rid: "queued"}


def test_readers_do_not_block_the_writer(tmp_path, experiment):
    with Store.open(tmp_path) as writer, Store.open(tmp_path) as reader:
        writer.add_experiment(experiment)
        rid = experiment.runs[0].run_id
        reader._conn.execute("BEGIN")  # a long read transaction
        assert reader.run_status([rid]) == {rid: "queued"}
        writer.add_metrics(rid, [(1, 1, "a", 1.0)])  # WAL: not blocked
        reader._conn.execute("COMMIT")
        assert len(reader.metrics_frame("exp")) == 1


def test_empty_experiment_frames_have_the_columns(tmp_path):
    from normlab.experiments.config import Experiment

    with Store.open(tmp_path) as store:
        store.add_experiment(Experiment("empty", []))
        assert list(store.runs_frame("empty").columns[:4]) == ["run_id", "experiment", "status", "group"]
        metrics = store.metrics_frame("empty")
        assert metrics.empty and list(metrics.columns) == ["run_id", "step", "epoch", "name", "value"]


def test_registering_again_redefines_the_experiment_unless_appending(tmp_path):
    old = load_experiment(None, ["seed=0,1"], name="e")
    new = load_experiment(None, ["seed=1,2"], name="e")
    with Store.open(tmp_path) as store:
        store.add_experiment(old)
        store.add_experiment(new)  # the file changed: the experiment is what it says now
        assert sorted(store.runs_frame("e")["seed"]) == [1, 2]
        store.add_experiment(old, append=True)  # `normlab run` accumulates single runs
        assert sorted(store.runs_frame("e")["seed"]) == [0, 1, 2]
        assert store._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 3  # none lost


def test_a_resume_drops_the_rows_past_its_checkpoint_step(tmp_path, experiment):
    run = experiment.runs[0].run_id
    rows = [(step, 1, "train_loss", float(step)) for step in (0, 10, 20, 30)]
    with Store.open(tmp_path) as store:
        store.add_experiment(experiment)
        store.mark_running(run, ENV, fresh=True)
        store.add_metrics(run, rows)
        store.mark_running(run, ENV, fresh=False, keep_through=20)  # checkpoint at step 20
        assert store.metrics_frame("exp")["step"].tolist() == [0, 10, 20]
        store.mark_running(run, ENV, fresh=False)  # a checkpoint without a readable step: keep all
        assert store.metrics_frame("exp")["step"].tolist() == [0, 10, 20]
        store.mark_running(run, ENV, fresh=True)
        assert store.metrics_frame("exp").empty
