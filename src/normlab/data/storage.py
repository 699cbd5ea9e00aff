"""Where data lives on disk, and how it gets there safely: pinned downloads and tar extraction.

The data directory is `root` when given, else `$NORMLAB_DATA`, else the user cache directory
(`platformdirs.user_cache_dir("normlab")`, e.g. `~/.cache/normlab` on Linux). Each dataset
has its own sub-directory (`<root>/cifar10/...`).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

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
    where = (f"put {remote.name} (SHA-256 {remote.sha256}, from {remote.urls[0]}) in {directory}"
             f"{', ' + hint if hint else ''}")
    if not download:
        raise DatasetError(f"{target} is missing and download=False: {where}.")
    import pooch  # heavy-ish, only needed to download

    directory.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in remote.urls:
        try:
            pooch.retrieve(url, known_hash=f"sha256:{remote.sha256}", fname=remote.name,
                           path=directory, progressbar=False)
            return target
        except Exception as exc:  # network errors and hash mismatches alike: try the next mirror
            errors.append(f"{url}: {type(exc).__name__}: {exc}")
    raise DatasetError(f"could not download {remote.name} ({'; '.join(errors)}). "
                       f"If this machine is offline, {where}.")


def _check_member(member: tarfile.TarInfo, archive: Path, target: Path) -> None:
    """Refuse members that would escape `target` or are not plain files/directories."""
    name = member.name
    resolved = (target / name).resolve()
    if Path(name).is_absolute() or ".." in Path(name).parts or not resolved.is_relative_to(target):
        raise DatasetError(f"{archive}: member {name!r} points outside the extraction directory "
                           f"(path traversal); refusing to extract a malicious or corrupt archive.")
    if not (member.isfile() or member.isdir()):
        # CIFAR archives hold only regular files; links and devices can only be an attack.
        kind = "link" if (member.issym() or member.islnk()) else "special file"
        raise DatasetError(f"{archive}: member {name!r} is a {kind}; only regular files are "
                           f"expected in this archive, refusing to extract it.")


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
                raise DatasetError(f"{archive}: archive lacks {sorted(missing)}; it is not the "
                                   f"expected distribution. Delete it and load again.")
            with tempfile.TemporaryDirectory(dir=target, prefix=".extract-") as tmp:
                for member in chosen:
                    # filter="data" (Python >= 3.11.4/3.12) repeats the checks above in tarfile.
                    if hasattr(tarfile, "data_filter"):
                        tar.extract(member, tmp, filter="data")
                    else:  # pragma: no cover - older Pythons; our own checks already ran
                        tar.extract(member, tmp)
                for member in chosen:
                    final = target / member.name
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(Path(tmp) / member.name, final)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DatasetError(f"{archive}: cannot read the archive ({type(exc).__name__}: {exc}); it "
                           f"is truncated or corrupt. Delete it and load again.") from exc
