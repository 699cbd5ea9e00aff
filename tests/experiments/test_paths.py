"""Writes stay inside the results folder: safe names, no write through a planted symlink."""

from __future__ import annotations

import sqlite3

import pytest
from typer.testing import CliRunner

from clitools import assert_user_error
from normlab import cli
from normlab.experiments import execute
from normlab.experiments.config import load_experiment
from normlab.experiments.errors import StoreError
from normlab.experiments.paths import check_name, safe_dir, write_atomic
from normlab.experiments.runner import run_experiment
from normlab.experiments.store import Store

from . import fakes


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A results folder with one finished experiment 'ok' (fake engine)."""
    monkeypatch.setattr(execute, "default_run_fn", fakes.fake_fit)
    out = tmp_path / "res"
    run_experiment(load_experiment(None, ["seed=0"], name="ok"), out, progress=False)
    return out


def test_a_hostile_store_name_does_not_become_a_path(results, tmp_path):
    with sqlite3.connect(results / "normlab.db") as conn:  # as someone else's store could hold
        conn.execute("INSERT INTO experiments VALUES ('../../escaped', '', '{}', 0, 0)")
    before = files_under(tmp_path)
    for command in (["export", "../../escaped"], ["report", "../../escaped"], ["compare", "../../escaped"]):
        result = invoke(*command, "--out", results)
        assert_user_error(result, "expected 1-100 characters, only letters, digits")
    assert files_under(tmp_path) == before


def test_export_does_not_write_through_a_planted_symlink(results, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (results / "exports").symlink_to(elsewhere, target_is_directory=True)
    assert_user_error(invoke("export", "ok", "--out", results), "is a symlink")
    (results / "exports").unlink()
    (results / "exports").mkdir()
    victim = tmp_path / "victim.csv"
    victim.write_text("keep")
    (results / "exports" / "ok_runs.csv").symlink_to(victim)
    assert_user_error(invoke("export", "ok", "--out", results), "is a symlink")
    assert victim.read_text() == "keep" and list(elsewhere.iterdir()) == []


def test_a_sweep_does_not_follow_a_planted_run_folder_link(tmp_path, monkeypatch):
    monkeypatch.setattr(execute, "default_run_fn", fakes.fake_fit)
    exp = load_experiment(None, ["seed=0"], name="s")
    out, elsewhere = tmp_path / "res", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "runs").mkdir(parents=True)
    (out / "runs" / exp.runs[0].run_id).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(StoreError, match="is a symlink"):
        run_experiment(exp, out, progress=False)
    assert list(elsewhere.iterdir()) == []


def test_a_planted_database_link_is_refused(tmp_path):
    target = tmp_path / "other.db"
    Store(target).close()
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "normlab.db").symlink_to(target)
    with pytest.raises(StoreError, match="is a symlink"):
        Store.open(tmp_path / "res")


def test_write_atomic_replaces_a_link_instead_of_writing_through_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "config.json").symlink_to(victim)
    write_atomic(tmp_path / "config.json", "{}")
    assert victim.read_text() == "keep" and (tmp_path / "config.json").read_text() == "{}"
    assert not (tmp_path / "config.json").is_symlink()


@pytest.mark.parametrize("part", ["..", ".", "", "a/b", "/abs"])
def test_safe_dir_refuses_parts_that_leave_the_folder(tmp_path, part):
    with pytest.raises(StoreError, match="leave the results folder"):
        safe_dir(tmp_path, part)


def test_names_allowed():
    assert check_name("mnist1d-norm-batch") and check_name("study.bn") and check_name("A_1")
