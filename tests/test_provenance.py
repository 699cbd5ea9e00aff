"""normlab.provenance: the commit of normlab's own checkout, None for an installed copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import normlab
from normlab import provenance

SRC = Path(normlab.__file__).resolve().parents[1]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                          capture_output=True, text=True, check=True).stdout.strip()


def _python(code: str, cwd: Path, pythonpath: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_the_checkouts_commit_from_any_directory(tmp_path):
    if provenance.CHECKOUT_ROOT is None or shutil.which("git") is None:
        pytest.skip("normlab does not run from a source checkout here")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=SRC, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    _git(tmp_path, "init", "-q")  # the current directory is another repository: not ours
    _git(tmp_path, "commit", "-q", "--allow-empty", "-m", "other")
    commit = _python("from normlab.provenance import git_commit; print(git_commit())", tmp_path, SRC)
    assert commit.removesuffix("+dirty") == head.stdout.strip()


def test_an_installed_copy_inside_another_repository_has_no_commit(tmp_path):
    """A wheel installed in a project's .venv: the project's commit is not normlab's."""
    if shutil.which("git") is None:
        pytest.skip("no git")
    project = tmp_path / "project"
    site = project / ".venv" / "lib" / "python3" / "site-packages"
    shutil.copytree(SRC / "normlab", site / "normlab", ignore=shutil.ignore_patterns("__pycache__"))
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "a project that vendors its venv")
    code = ("from normlab.provenance import git_commit; from normlab.experiments.env import "
            "environment; print(git_commit(), environment('cpu')['git_commit'])")
    assert _python(code, project, site) == "None None"


def test_no_git_program_means_no_commit(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    provenance.git_commit.cache_clear()
    try:
        assert provenance.git_commit() is None
    finally:
        provenance.git_commit.cache_clear()
