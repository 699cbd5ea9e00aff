"""MNIST and Fashion-MNIST from their IDX files (gzip-compressed or already decompressed).

IDX format (http://yann.lecun.com/exdb/mnist/): a 4-byte magic `00 00 08 <ndim>` (0x08 =
unsigned byte), then `ndim` big-endian uint32 sizes, then the data, row-major. Images are
`idx3` `(N, 28, 28)`, labels `idx1` `(N,)`.

Files expected under `<root>/<name>/`, each either as `<file>.gz` (as published) or `<file>`:
`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
`t10k-labels-idx1-ubyte`. Files found on disk are validated by structure (magic, sizes,
exact length, label range), so files from any mirror work; downloads are SHA-256 pinned.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from normlab.data.dataset import Dataset, DatasetError, channel_stats
from normlab.data.storage import RemoteFile, data_root, fetch

_UBYTE = 0x08


@dataclass(frozen=True)
class IdxSpec:
    """One IDX dataset: its sub-directory, mirrors, pinned file hashes and expected counts."""

    name: str
    mirrors: tuple[str, ...]  # base URLs, each followed by the file name
    sha256: dict[str, str]  # "<file>.gz" -> SHA-256 of the published gzip file
    train_count: int = 60000
    test_count: int = 10000
    num_classes: int = 10

    def remote(self, gz_name: str) -> RemoteFile:
        """The published `gz_name` with its mirrors and pinned hash."""
        urls = tuple(base + gz_name for base in self.mirrors)
        return RemoteFile(gz_name, urls, self.sha256[gz_name])


# SHA-256 of the published gzip files (the sources publish MD5s; these are the hashes pinned by
# torchvision/tensorflow-datasets-style loaders, confirmed in several independent sources).
MNIST = IdxSpec(
    name="mnist",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    sha256={
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
)
FASHION_MNIST = IdxSpec(
    name="fashion_mnist",
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
    sha256={
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
)
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes with `ndim` dimensions (gzip if it ends in .gz)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(
            f"{path}: cannot decompress ({type(exc).__name__}: {exc}); the file is "
            f"truncated or corrupt. Delete it and load again."
        ) from exc
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes((0, 0, _UBYTE, ndim)):
        raise DatasetError(
            f"{path}: not an IDX file of {ndim}-D unsigned bytes (magic "
            f"{raw[:4].hex() or 'missing'}, expected 000008{ndim:02x}). Delete it "
            f"and load again."
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims)  # Python ints: a corrupt header cannot overflow
    if len(raw) != expected:
        raise DatasetError(
            f"{path}: {len(raw)} bytes after decompression, expected {expected} for "
            f"dimensions {dims}; the file is truncated or corrupt. Delete it and "
            f"load again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _locate(spec: IdxSpec, directory: Path, stem: str, download: bool) -> Path:
    """The on-disk copy of `stem` (decompressed or .gz), downloading the .gz if neither exists."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return fetch(
        spec.remote(f"{stem}.gz"),
        directory,
        download=download,
        hint=f"together with the other files {', '.join(f + '.gz' for f in FILES)}",
    )


def _read_split(spec: IdxSpec, directory: Path, prefix: str, count: int, download: bool):
    images_path = _locate(spec, directory, f"{prefix}-images-idx3-ubyte", download)
    labels_path = _locate(spec, directory, f"{prefix}-labels-idx1-ubyte", download)
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if images.shape != (count, 28, 28):
        raise DatasetError(
            f"{images_path}: images of shape {images.shape}, expected ({count}, 28, 28). Delete it and load again."
        )
    if labels.shape != (count,):
        raise DatasetError(f"{labels_path}: {labels.shape[0]} labels, expected {count}. Delete it and load again.")
    bad = np.flatnonzero(labels >= spec.num_classes)
    if bad.size:
        raise DatasetError(
            f"{labels_path}: label {labels[bad[0]]} at index {bad[0]}, expected "
            f"0..{spec.num_classes - 1}; the file is corrupt. Delete it and load "
            f"again."
        )
    # (N, 28, 28) -> (N, 1, 28, 28): channels first, one grey channel.
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def load_idx(spec: IdxSpec, root: str | os.PathLike | None = None, *, download: bool = True) -> Dataset:
    """Load an IDX dataset as uint8 `(N, 1, 28, 28)` images.

    Args:
        spec: `MNIST` or `FASHION_MNIST`.
        root: data directory (default `$NORMLAB_DATA` or the user cache dir).
        download: fetch missing files (SHA-256 checked); False raises a clear error instead.
    """
    directory = data_root(root) / spec.name
    train_x, train_y = _read_split(spec, directory, "train", spec.train_count, download)
    test_x, test_y = _read_split(spec, directory, "t10k", spec.test_count, download)
    mean, std = channel_stats(train_x)
    return Dataset(
        name=spec.name,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=spec.num_classes,
        input_shape=(1, 28, 28),
        mean=mean,
        std=std,
    )


def load_mnist(root: str | os.PathLike | None = None, *, download: bool = True) -> Dataset:
    """MNIST: 60000 train / 10000 test handwritten digits, uint8 `(1, 28, 28)`, 10 classes."""
    return load_idx(MNIST, root, download=download)


def load_fashion_mnist(root: str | os.PathLike | None = None, *, download: bool = True) -> Dataset:
    """Fashion-MNIST: 60000 train / 10000 test clothing images, uint8 `(1, 28, 28)`, 10 classes."""
    return load_idx(FASHION_MNIST, root, download=download)
