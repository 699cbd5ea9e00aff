"""Where data lives on disk, and how it gets there safely: pinned downloads, tar extraction and
atomic writes.

The data directory is `root` when given, else `$NORMLAB_DATA`, else the user cache directory
(`platformdirs.user_cache_dir("normlab")`, e.g. `~/.cache/normlab` on Linux). Each dataset
has its own sub-directory (`<root>/cifar10/...`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from normlab.data.dataset import DatasetError


@dataclass(frozen=True)
class RemoteFile:
    """A published file: its name, where it can be fetched from, and its pinned SHA-256."""

    name: str
    urls: tuple[str, ...]  # mirrors, tried in order
    sha256: str


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data directory: `root`, else `$NORMLAB_DATA`, else the user cache dir / normlab."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("NORMLAB_DATA")
    if env:
        return Path(env).expanduser()
    import platformdirs  # only needed when no directory was given

    return Path(platformdirs.user_cache_dir("normlab"))


def _create_new_file(directory: Path, stem: str) -> tuple[int, Path]:
    """Create and open (write-only) a new, uniquely named hidden file in `directory`, with the
    mode a plain `open()` gives: 0o666 minus the umask (`tempfile.mkstemp` would give 0o600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        path = directory / f".{stem}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:  # a name collision: draw another
            continue


def new_file_mode(directory: Path) -> int:
    """The permission bits `open()` gives a new file in `directory` (e.g. 0o644 for umask 022).

    Found by creating an empty probe file: reading the umask would mean changing it, which is
    process-wide and so not thread-safe.
    """
    fd, probe = _create_new_file(directory, "mode-probe")
    try:
        return stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
        probe.unlink()


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` atomically: `write(handle)` fills a temporary file beside it, then a rename.

    A crash never leaves a half-written `path`, and the file gets the mode a plain `open()`
    would give it (0o666 minus the umask), so a data folder shared between users stays readable
    to all of them instead of being rebuilt by each.

    Example:
        >>> atomic_write(root / "cache.npz", lambda f: np.savez(f, x=x))
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_new_file(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    """Raise `DatasetError` naming `path` if its SHA-256 is not `expected`."""
    got = sha256_file(path)
    if got != expected:
        raise DatasetError(
            f"{path}: SHA-256 is {got}, expected {expected}; the file is damaged or not the "
            f"published version. Delete it and load again to re-download (or put the right file "
            f"there)."
        )


def fetch(remote: RemoteFile, directory: Path, *, download: bool, hint: str) -> Path:
    """Return `directory/remote.name`, downloading it (hash-checked, via pooch) if absent.

    A file already present is checked against the pinned hash and never re-downloaded. With
    `download=False`, or when every mirror fails (offline), raises `DatasetError` saying where
    to put which file; `hint` names the alternative (e.g. the extracted files).
    """
    target = directory / remote.name
    if target.exists():
        check_sha256(target, remote.sha256)
        return target
    where = (
        f"put {remote.name} (SHA-256 {remote.sha256}, from {remote.urls[0]}) in {directory}"
        f"{', ' + hint if hint else ''}"
    )
    if not download:
        raise DatasetError(f"{target} is missing and download=False: {where}.")
    import pooch  # heavy-ish, only needed to download

    directory.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in remote.urls:
        try:
            pooch.retrieve(
                url, known_hash=f"sha256:{remote.sha256}", fname=remote.name, path=directory, progressbar=False
            )
        except Exception as exc:  # network errors and hash mismatches alike: try the next mirror
            errors.append(f"{url}: {type(exc).__name__}: {exc}")
            continue
        # pooch downloads into a tempfile (mode 0o600) and moves it: make it an ordinary file.
        os.chmod(target, new_file_mode(directory))
        return target
    raise DatasetError(f"could not download {remote.name} ({'; '.join(errors)}). If this machine is offline, {where}.")


def _check_member(member: tarfile.TarInfo, archive: Path, target: Path) -> None:
    """Refuse members that would escape `target` or are not plain files/directories."""
    name = member.name
    resolved = (target / name).resolve()
    if Path(name).is_absolute() or ".." in Path(name).parts or not resolved.is_relative_to(target):
        raise DatasetError(
            f"{archive}: member {name!r} points outside the extraction directory "
            f"(path traversal); refusing to extract a malicious or corrupt archive."
        )
    if not (member.isfile() or member.isdir()):
        # CIFAR archives hold only regular files; links and devices can only be an attack.
        kind = "link" if (member.issym() or member.islnk()) else "special file"
        raise DatasetError(
            f"{archive}: member {name!r} is a {kind}; only regular files are "
            f"expected in this archive, refusing to extract it."
        )


def safe_extract(archive: Path, target: Path, wanted: set[str]) -> None:
    """Extract the members named in `wanted` from a .tar.gz into `target`, safely.

    Every member is checked first (no absolute paths, no `..`, no links or devices); the wanted
    ones are extracted into a temporary directory next to `target` and moved in only when all
    of them were found, so an interrupted extraction never looks complete.
    """
    target.mkdir(parents=True, exist_ok=True)
    target = target.resolve()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, archive, target)
            # A wanted name must be a regular file: a directory of that name is not the data.
            chosen = [m for m in members if m.name in wanted and m.isfile()]
            missing = wanted - {m.name for m in chosen}
            if missing:
                raise DatasetError(
                    f"{archive}: archive lacks {sorted(missing)}; it is not the "
                    f"expected distribution. Delete it and load again."
                )
            with tempfile.TemporaryDirectory(dir=target, prefix=".extract-") as tmp:
                for member in chosen:
                    # filter="data" (Python >= 3.11.4/3.12) repeats the checks above in tarfile.
                    if hasattr(tarfile, "data_filter"):
                        tar.extract(member, tmp, filter="data")
                    else:  # pragma: no cover - older Pythons; our own checks already ran
                        tar.extract(member, tmp)
                # tarfile keeps the archive's modes (0o600 members would stay private); give
                # the files the mode `open()` would, as GNU tar does for a non-root user.
                mode = new_file_mode(target)
                for member in chosen:
                    final = target / member.name
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.chmod(Path(tmp) / member.name, mode)
                    os.replace(Path(tmp) / member.name, final)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DatasetError(
            f"{archive}: cannot read the archive ({type(exc).__name__}: {exc}); it "
            f"is truncated or corrupt. Delete it and load again."
        ) from exc
