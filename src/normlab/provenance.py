"""Where normlab's code came from: the git commit of its source checkout, if it runs from one.

Torch-free and cheap, so runs, benchmarks and the CLI can all record it. The commit is the
checkout that holds *this package's files*, asked in the package's own folder: neither the
current directory's repository nor, for an installed wheel, a repository that happens to
contain the virtual environment (a `.venv` inside a project checkout) counts.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# src layout: <checkout>/src/normlab/; an installed copy sits in site-packages/normlab/
CHECKOUT_ROOT = PACKAGE_DIR.parents[1] if PACKAGE_DIR.parent.name == "src" else None


def _git(*args: str) -> str | None:
    """stdout of `git -C <checkout> args`, None when git is missing, fails or hangs."""
    try:
        out = subprocess.run(["git", "-C", str(CHECKOUT_ROOT), *args], capture_output=True,
                             text=True, timeout=10, check=False)
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


__all__ = ["CHECKOUT_ROOT", "PACKAGE_DIR", "git_commit"]
