"""normlab.provenance: versions, the commit of normlab's own checkout (None for an installed copy),
device and host, with the same keys for runs and benchmarks."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import normlab
from normlab import provenance
from normlab.experiments.store import ENV_KEYS as STORE_ENV_KEYS
from normlab.provenance import RUN_KEYS, device_name, environment, machine

SRC = Path(normlab.__file__).resolve().parents[1]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def _python(code: str, cwd: Path, pythonpath: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
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
    code = "from normlab.provenance import environment, git_commit; print(git_commit(), environment()['git_commit'])"
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


def test_environment_reports_versions_commit_device_and_threads():
    env = environment("cpu")
    assert tuple(env) == RUN_KEYS
    assert env["python"] == platform.python_version()
    assert env["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert env["normlab"] == normlab.__version__
    assert env["device"] == f"cpu ({provenance.cpu_name()})" and env["hostname"]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert environment("cpu")["torch_threads"] == 1  # what the run trains with
    finally:
        torch.set_num_threads(threads)


def test_without_torch_loaded_no_thread_count_and_no_torch_import(tmp_path):
    code = (
        "import sys; from normlab.provenance import environment; env = environment('cpu'); "
        "print(env['torch_threads'], 'torch' in sys.modules)"
    )
    assert _python(code, tmp_path, SRC) == "None False"


def test_auto_is_named_as_what_it_resolves_to():
    expected = "cuda:" if torch.cuda.is_available() else "cpu ("
    assert device_name("auto").startswith(expected)


def test_the_store_keeps_every_key_a_run_records():
    # every provenance key, in order, then the fingerprint of the data the run trained on
    assert STORE_ENV_KEYS == (*RUN_KEYS, "data_fingerprint")


def test_machine_is_json_ready():
    where = machine()
    assert tuple(where) == provenance.MACHINE_KEYS
    assert json.loads(json.dumps(where)) == where and where["cpu_count"] >= 1
