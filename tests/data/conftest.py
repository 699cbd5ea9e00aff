"""Builders of tiny files in the exact real on-disk formats (CIFAR binary records, IDX gzip,
.tar.gz archives), shared by the data tests."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest


def cifar_records(n: int, label_classes: tuple[int, ...], seed: int = 0):
    """`n` CIFAR binary records: bytes, images (n, 3, 32, 32) uint8, labels (n, len(classes))."""
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.integers(0, c, n) for c in label_classes], axis=1).astype(np.uint8)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    # A record is the label byte(s) then the R, G, B planes, each 32x32 row-major.
    records = np.concatenate([labels, images.reshape(n, -1)], axis=1)
    return records.tobytes(), images, labels


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 00 00 08 ndim, big-endian uint32 sizes, data."""
    header = bytes((0, 0, 0x08, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_gz(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same content always gives the same bytes.
    path.write_bytes(gzip.compress(data, mtime=0))
    return path


def write_tar_gz(path: Path, members: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> Path:
    """A .tar.gz with regular-file `members` (name -> bytes) plus raw `extra` entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


@pytest.fixture(autouse=True)
def _no_ambient_data_dir(monkeypatch, tmp_path):
    """Tests never read or write the user's real data directory."""
    monkeypatch.setenv("NORMLAB_DATA", str(tmp_path / "ambient-data"))


@pytest.fixture
def formats():
    """The builders above, for test modules (tests/ is not a package, so no relative import)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        cifar_records=cifar_records, idx_bytes=idx_bytes, write_gz=write_gz, write_tar_gz=write_tar_gz
    )


@pytest.fixture(params=[0o022, 0o007], ids=["umask022", "umask007"])
def umask(request):
    """Run the test under this umask (restored after); the value is the umask set."""
    import os

    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)
