"""Names that become file names, and writes that stay inside the results folder.

A results folder may come from someone else, so nothing normlab writes there may escape it:
experiment names are one safe character set (they name report and export files), every
folder on the way to a written file is a real directory inside the results folder (not a
planted symlink), and files are opened with O_NOFOLLOW (a symlink planted at the file's name
is refused, not written through).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from normlab.experiments.errors import ConfigError, StoreError

MAX_NAME_LENGTH = 100
NAME_CHARS = "letters, digits, '.', '_' and '-', starting with a letter or a digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(name: object, what: str = "experiment name") -> str:
    """`name` when it is 1-100 of NAME_CHARS; else ConfigError saying what is allowed."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
        shown = repr(name) if not isinstance(name, str) or len(name) <= 120 else repr(name[:120]) + "..."
        raise ConfigError(
            f"{what}: expected 1-{MAX_NAME_LENGTH} characters, only {NAME_CHARS} (it names "
            f"files), got {shown}; rename it, e.g. `name: my-sweep` or --name my-sweep"
        )
    return name


def safe_dir(root: str | os.PathLike, *parts: str) -> Path:
    """`root/part/...`, created when missing; StoreError when a part is a symlink or not a
    directory, or would leave `root` (`..`, an absolute part)."""
    root = Path(root)
    path = root
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\0" in part or os.sep in part:
            raise StoreError(
                f"{str(root)!r}: refusing to write under the path part {part!r}; it would leave the results folder"
            )
        path = path / part
        if path.is_symlink():
            raise StoreError(
                f"{str(path)!r} is a symlink; normlab writes only into real folders inside the "
                f"results folder {str(root)!r}: remove the link or choose another --out"
            )
        try:
            path.mkdir(exist_ok=True)
        except FileExistsError:
            raise StoreError(f"{str(path)!r} exists and is not a folder; remove it or choose another --out") from None
    return path


def open_new(path: str | os.PathLike, mode: str = "w"):
    """Open `path` for writing (truncated) without following a symlink at its name; a
    planted symlink is a StoreError naming it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    except OSError:
        if Path(path).is_symlink():
            raise StoreError(
                f"{str(path)!r} is a symlink; normlab does not write through links: remove it and run again"
            ) from None
        raise
    return os.fdopen(fd, mode)


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file (removed on failure) and a rename; the
    rename replaces a symlink at `path` instead of writing through it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        with open_new(tmp) as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["MAX_NAME_LENGTH", "NAME_CHARS", "check_name", "open_new", "safe_dir", "write_atomic"]
