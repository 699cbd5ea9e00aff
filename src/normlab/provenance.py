"""Where a result came from: versions, source commit, device and host, for runs and benchmarks.

`environment(device)` is stored with every run (the store's `env.*` columns); a benchmark's
JSON carries `environment(device) | machine()`. Both use the same keys, so a run and a
benchmark from the same machine read alike.

Torch-free on import (the CLI and the store load this): torch's version comes from the
installed metadata and its thread count from torch only if a caller loaded it.

The commit is the checkout that holds *this package's files*, asked in the package's own
folder: neither the current directory's repository nor, for an installed wheel, a repository
that happens to contain the virtual environment (a `.venv` inside a project checkout) counts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import normlab

PACKAGE_DIR = Path(__file__).resolve().parent
# src layout: <checkout>/src/normlab/; an installed copy sits in site-packages/normlab/
CHECKOUT_ROOT = PACKAGE_DIR.parents[1] if PACKAGE_DIR.parent.name == "src" else None

RUN_KEYS = ("python", "torch", "normlab", "git_commit", "device", "hostname", "torch_threads")
"""What `environment` returns, in the store's column order."""
MACHINE_KEYS = ("platform", "cpu_count", "load_avg_1min", "time")
"""What `machine` adds for a benchmark (timings depend on load; a run's results do not)."""


def _git(*args: str) -> str | None:
    """stdout of `git -C <checkout> args`, None when git is missing, fails or hangs."""
    try:
        out = subprocess.run(
            ["git", "-C", str(CHECKOUT_ROOT), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.cache
def git_commit() -> str | None:
    """The full commit hash of normlab's source checkout, with '+dirty' when tracked files are
    modified; None when normlab does not run from a git checkout (an installed wheel)."""
    if CHECKOUT_ROOT is None:
        return None
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != CHECKOUT_ROOT:
        return None  # no git, or a repository that merely contains these files
    head = _git("rev-parse", "HEAD")
    if not head:
        return None
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return head + ("+dirty" if dirty else "")


def cpu_name() -> str:
    """The CPU model ('model name' in /proc/cpuinfo on Linux), else what `platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: str) -> str:
    """The device and its hardware, e.g. 'cuda:0 (NVIDIA H100 80GB HBM3)' or 'cpu (Intel(R)
    Xeon(R) Processor)'; 'auto' is named as what it resolves to here."""
    if device == "auto" or device.startswith("cuda"):
        # torch only for a GPU's name (a run on it loads torch anyway); a CPU run asks nothing
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and torch.cuda.is_available():
            index = int(device.partition(":")[2] or torch.cuda.current_device())
            return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{device} ({cpu_name()})"


def _torch_version() -> str | None:
    try:  # the installed version, without paying for `import torch` in a fresh worker
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def environment(device: str = "cpu") -> dict[str, Any]:
    """python, torch and normlab versions, source commit, device, host name, and torch's
    intra-op threads in this process (None when torch is not loaded): on CPU the last float
    digits of a result depend on the thread count. Keys: RUN_KEYS."""
    torch = sys.modules.get("torch")
    return {
        "python": platform.python_version(),
        "torch": _torch_version(),
        "normlab": normlab.__version__,
        "git_commit": git_commit(),
        "device": device_name(device),
        "hostname": socket.gethostname(),
        "torch_threads": torch.get_num_threads() if torch is not None else None,
    }


def machine() -> dict[str, Any]:
    """The OS, the CPU count, the 1-minute load average and the UTC time. Keys: MACHINE_KEYS."""
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


__all__ = [
    "CHECKOUT_ROOT",
    "MACHINE_KEYS",
    "PACKAGE_DIR",
    "RUN_KEYS",
    "cpu_name",
    "device_name",
    "environment",
    "git_commit",
    "machine",
]
