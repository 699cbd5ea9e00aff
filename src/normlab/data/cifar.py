"""CIFAR-10 and CIFAR-100 from their *binary* distributions, parsed with numpy (no pickle).

Binary format (https://www.cs.toronto.edu/~kriz/cifar.html): fixed-size records,
`<label bytes><3072 pixel bytes>`; the pixels are the red, green and blue 32x32 planes, each
row-major, so a record's pixels reshape straight to channels-first `(3, 32, 32)`.
CIFAR-10 has one label byte (0..9); CIFAR-100 has two, coarse (0..19) then fine (0..99).

Files expected under `<root>/<name>/` (either the extracted folder or the archive, which is
then hash-checked and extracted safely):

    cifar10/cifar-10-batches-bin/data_batch_{1..5}.bin, test_batch.bin   (10000 records each)
    cifar100/cifar-100-binary/train.bin (50000), test.bin (10000)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from normlab.data.dataset import Dataset, DatasetError, channel_stats
from normlab.data.storage import RemoteFile, data_root, fetch, safe_extract

PIXELS = 3 * 32 * 32  # bytes of one image in a record


@dataclass(frozen=True)
class CifarSpec:
    """Where a CIFAR variant lives and what its files must contain."""

    name: str  # registry name and sub-directory of the data root
    archive: RemoteFile
    folder: str  # top-level folder inside the archive
    train_files: tuple[tuple[str, int], ...]  # (file name, record count)
    test_files: tuple[tuple[str, int], ...]
    label_bytes: int  # 1 for CIFAR-10; 2 (coarse, fine) for CIFAR-100
    label_classes: tuple[int, ...]  # classes of each label byte, in record order

    def paths(self, directory: Path) -> list[Path]:
        """Every data file this variant needs, under `directory`."""
        return [directory / self.folder / name for name, _ in self.train_files + self.test_files]


# SHA-256 of the published archives, as pinned by tensorflow-datasets and several independent
# loaders (checked against more than one source; the site itself publishes only MD5s:
# c32a1d4ab5d03f1284b67883e8d87530 and 03b5dce01913d631647c71ecec9e9cb8).
CIFAR10 = CifarSpec(
    name="cifar10",
    archive=RemoteFile(
        "cifar-10-binary.tar.gz",
        ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
        "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    ),
    folder="cifar-10-batches-bin",
    train_files=tuple((f"data_batch_{i}.bin", 10000) for i in range(1, 6)),
    test_files=(("test_batch.bin", 10000),),
    label_bytes=1,
    label_classes=(10,),
)
CIFAR100 = CifarSpec(
    name="cifar100",
    archive=RemoteFile(
        "cifar-100-binary.tar.gz",
        ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",),
        "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
    ),
    folder="cifar-100-binary",
    train_files=(("train.bin", 50000),),
    test_files=(("test.bin", 10000),),
    label_bytes=2,
    label_classes=(20, 100),
)


def read_records(path: Path, count: int, spec: CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    """Parse one binary batch: uint8 images `(count, 3, 32, 32)` and all label bytes
    `(count, label_bytes)`; raises `DatasetError` naming the file if size or labels are off."""
    record = spec.label_bytes + PIXELS
    size = path.stat().st_size
    if size != count * record:
        raise DatasetError(
            f"{path}: {size} bytes, expected {count} records x {record} bytes = {count * record} "
            f"bytes; the file is truncated or not a {spec.name} binary batch. Delete "
            f"{path.parent} and load again to re-extract it."
        )
    raw = np.fromfile(path, dtype=np.uint8).reshape(count, record)
    labels = raw[:, : spec.label_bytes]
    for column, classes in enumerate(spec.label_classes):
        bad = np.flatnonzero(labels[:, column] >= classes)
        if bad.size:
            raise DatasetError(
                f"{path}: record {bad[0]} has label {labels[bad[0], column]}, expected "
                f"0..{classes - 1}; the file is corrupt. Delete {path.parent} and load again to "
                f"re-extract it."
            )
    images = raw[:, spec.label_bytes :].reshape(count, 3, 32, 32)
    return images, labels


def _read_split(directory: Path, files: tuple[tuple[str, int], ...], spec: CifarSpec, column: int):
    parts = [read_records(directory / spec.folder / name, count, spec) for name, count in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1][:, column] for p in parts]).astype(np.int64)
    return torch.from_numpy(images), torch.from_numpy(labels)


def load_cifar(
    spec: CifarSpec,
    root: str | os.PathLike | None = None,
    *,
    download: bool = True,
    labels: Literal["fine", "coarse"] = "fine",
) -> Dataset:
    """Load a CIFAR variant as uint8 `(N, 3, 32, 32)` images, extracting/downloading if needed.

    Args:
        spec: `CIFAR10` or `CIFAR100`.
        root: data directory (default `$NORMLAB_DATA` or the user cache dir).
        download: fetch the archive when neither the extracted files nor the archive exist.
        labels: CIFAR-100 only: `"fine"` (100 classes) or `"coarse"` (20 superclasses).
    """
    if labels not in ("fine", "coarse"):
        raise ValueError(f"labels must be 'fine' or 'coarse', got {labels!r}")
    if labels == "coarse" and spec.label_bytes == 1:
        raise ValueError(f"{spec.name} has only one label per image; labels='coarse' is for cifar100")
    directory = data_root(root) / spec.name
    if not all(p.exists() for p in spec.paths(directory)):
        hint = f"or extract it there so that {directory / spec.folder} holds " + ", ".join(
            name for name, _ in spec.train_files + spec.test_files
        )
        archive = fetch(spec.archive, directory, download=download, hint=hint)
        safe_extract(archive, directory, {f"{spec.folder}/{p.name}" for p in spec.paths(directory)})
    # label byte 0 is CIFAR-100's coarse one; the last is CIFAR-10's only one, CIFAR-100's fine one
    column = 0 if labels == "coarse" else spec.label_bytes - 1
    train_x, train_y = _read_split(directory, spec.train_files, spec, column)
    test_x, test_y = _read_split(directory, spec.test_files, spec, column)
    mean, std = channel_stats(train_x)
    return Dataset(
        name=spec.name,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=spec.label_classes[column],
        input_shape=(3, 32, 32),
        mean=mean,
        std=std,
    )


def load_cifar10(root: str | os.PathLike | None = None, *, download: bool = True) -> Dataset:
    """CIFAR-10: 50000 train / 10000 test uint8 images `(3, 32, 32)`, 10 classes."""
    return load_cifar(CIFAR10, root, download=download)


def load_cifar100(
    root: str | os.PathLike | None = None, *, download: bool = True, labels: Literal["fine", "coarse"] = "fine"
) -> Dataset:
    """CIFAR-100: 50000 train / 10000 test uint8 images `(3, 32, 32)`, 100 (or 20) classes."""
    return load_cifar(CIFAR100, root, download=download, labels=labels)
