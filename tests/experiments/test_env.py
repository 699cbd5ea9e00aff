"""Provenance recorded with every run."""

from __future__ import annotations

import platform
import subprocess

import torch

import normlab
from normlab.experiments.env import device_name, environment, git_commit, resolve_device


def test_environment_reports_versions_commit_and_device():
    env = environment("cpu")
    assert env["python"] == platform.python_version()
    assert env["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert env["normlab"] == normlab.__version__
    assert env["device"].startswith("cpu (")
    assert env["hostname"]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert environment("cpu")["torch_threads"] == 1  # what the run trains with
    finally:
        torch.set_num_threads(threads)


def test_git_commit_is_the_checkout_head():
    git_commit.cache_clear()  # HEAD moves while several people commit to this checkout
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=normlab.__path__[0])
    if head.returncode != 0:
        assert git_commit() is None
    else:
        assert git_commit().removesuffix("+dirty") == head.stdout.strip()


def test_auto_device_resolves_to_what_is_there():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cuda:1") == "cuda:1"
    assert device_name("cpu").startswith("cpu")
