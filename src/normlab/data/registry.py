"""Build any dataset by name, and tell what is on disk for it (`normlab data info NAME`)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from normlab.data import cifar, idx, mnist1d
from normlab.data.dataset import Dataset
from normlab.data.storage import data_root
from normlab.data.synthetic import load_synthetic

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "mnist1d": mnist1d.load_mnist1d,
    "cifar10": cifar.load_cifar10,
    "cifar100": cifar.load_cifar100,
    "mnist": idx.load_mnist,
    "fashion_mnist": idx.load_fashion_mnist,
    "synthetic": load_synthetic,
}


def dataset_names() -> list[str]:
    """Registered dataset names, in the order they are documented (the default first)."""
    return list(_LOADERS)


def _resolve(name: str) -> str:
    key = str(name).strip().lower().replace("-", "_")
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; valid names are {dataset_names()}")
    return key


def load_dataset(name: str, root: str | os.PathLike | None = None, **kw: Any) -> Dataset:
    """Load dataset `name` from `root` (default `$NORMLAB_DATA`, else the user cache dir).

    Args:
        name: one of `dataset_names()`: mnist1d (default, generated offline), cifar10,
            cifar100, mnist, fashion_mnist, synthetic.
        root: data directory.
        **kw: options of that dataset's loader, e.g. `download=False` (files), `labels="coarse"`
            (cifar100), `shape=(3, 32, 32), difficulty=2.0` (synthetic), `num_samples=500`
            (mnist1d generator arguments).

    Example:
        >>> ds = load_dataset("mnist1d")
        >>> ds.train_x.shape, ds.num_classes
        (torch.Size([4000, 1, 40]), 10)
    """
    key = _resolve(name)
    loader = _LOADERS[key]
    params = inspect.signature(loader).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(kw) - set(params) - {"root"})
    if unknown and not takes_any:
        valid = [p for p in params if p != "root"]
        raise ValueError(f"dataset {key!r} has no option(s) {unknown}; its options are {valid}")
    return loader(root, **kw)


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size} bytes"


def _file_lines(paths: list[Path]) -> list[str]:
    return [f"  [ok] {p} ({_size(p)})" if p.exists() else f"  [missing] {p}" for p in paths]


def describe_data(name: str, root: str | os.PathLike | None = None) -> str:
    """Human-readable report of what is on disk for dataset `name` and what is missing.

    Never downloads or builds anything. This is what `normlab data info NAME` prints.
    """
    key = _resolve(name)
    base = data_root(root)
    lines = [f"dataset {key}: data directory {base / key}"]
    if key == "synthetic":
        lines.append("  generated in memory on every load; nothing is stored or needed on disk.")
    elif key == "mnist1d":
        path = mnist1d.cache_path(base, mnist1d.generator_args())
        lines += _file_lines([path])
        lines.append(
            "  built offline by the mnist1d package on first load (a few seconds) and cached; never downloaded."
            if not path.exists()
            else "  cached default (4000 train / 1000 test); checked on every load."
        )
    elif key in ("cifar10", "cifar100"):
        spec = cifar.CIFAR10 if key == "cifar10" else cifar.CIFAR100
        directory = base / key
        files = spec.paths(directory)
        archive = directory / spec.archive.name
        lines.append("  extracted files:")
        lines += _file_lines(files)
        lines.append("  archive:")
        lines += _file_lines([archive])
        if all(p.exists() for p in files):
            lines.append("  ready: the extracted files are used (validated on load).")
        elif archive.exists():
            lines.append("  ready: the archive is hash-checked and extracted on first load.")
        else:
            remote = spec.archive
            lines.append(
                f"  missing: load with download=True, or put {remote.name} (SHA-256 "
                f"{remote.sha256}, from {remote.urls[0]}) in {directory}."
            )
    else:
        spec = idx.MNIST if key == "mnist" else idx.FASHION_MNIST
        directory = base / key
        missing = []
        for stem in idx.FILES:
            found = [p for p in (directory / stem, directory / f"{stem}.gz") if p.exists()]
            lines += _file_lines(found or [directory / f"{stem}.gz"])
            if not found:
                missing.append(f"{stem}.gz")
        if missing:
            lines.append(
                f"  missing: load with download=True, or put {', '.join(missing)} "
                f"(from {spec.mirrors[0]}) in {directory}."
            )
        else:
            lines.append("  ready: all four files present (validated on load).")
    return "\n".join(lines)
