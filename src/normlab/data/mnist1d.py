"""MNIST-1D, the embedded default: generated offline by the `mnist1d` package, cached as .npz.

MNIST-1D (Greydanus 2020) is 10 one-dimensional digit templates, each padded, sheared,
translated, noised and resampled to 40 points. With the package defaults (seed 42) it has
4000 train and 1000 test sequences. We call the package's own generator,
`mnist1d.data.make_dataset`, never its `get_dataset` (which downloads a pickle); so no network
call is ever made and no pickle is ever loaded.

The cache `<root>/mnist1d/mnist1d-<fingerprint>.npz` keeps the generator's float64 arrays
unchanged, plus the SHA-256 of their bytes. On load the shapes, labels and that hash are
checked; a damaged or truncated cache is rebuilt (with a warning), never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from normlab.data.dataset import Dataset, channel_stats
from normlab.data.storage import atomic_write, data_root

NUM_CLASSES = 10
_ARRAYS = ("x", "y", "x_test", "y_test")
# `mnist1d.data.get_dataset_args()` without its download URL, copied so that loading the cache
# does not import the package (it pulls in matplotlib: seconds). A test checks the copy.
DEFAULT_ARGS: dict[str, Any] = {
    "num_samples": 5000,
    "train_split": 0.8,
    "template_len": 12,
    "padding": [36, 60],
    "scale_coeff": 0.4,
    "max_translation": 48,
    "corr_noise_scale": 0.25,
    "iid_noise_scale": 2e-2,
    "shear_scale": 0.75,
    "shuffle_seq": False,
    "final_seq_length": 40,
    "seed": 42,
}


def generator_args(**overrides: Any) -> dict[str, Any]:
    """The package's default arguments (`get_dataset_args()`, seed 42) with `overrides`."""
    unknown = sorted(set(overrides) - set(DEFAULT_ARGS))
    if unknown:
        raise ValueError(
            f"mnist1d: unknown option(s) {unknown}; valid options are "
            f"{list(DEFAULT_ARGS)} (the mnist1d generator's arguments)."
        )
    return {**DEFAULT_ARGS, **overrides}


def generate(args: dict[str, Any]) -> dict[str, np.ndarray]:
    """Run the package generator; returns its float64 `x`, `x_test` and int64 `y`, `y_test`.

    `make_dataset` reseeds numpy's and Python's global generators; we restore both afterwards
    so that building the data never changes the caller's random streams.
    """
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(ObjectView(dict(args)))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {k: np.ascontiguousarray(data[k]) for k in _ARRAYS}


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over each array's name, dtype, shape and bytes, in a fixed order."""
    digest = hashlib.sha256()
    for key in _ARRAYS:
        arr = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{arr.dtype.str}:{arr.shape};".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def expected_sizes(args: dict[str, Any]) -> tuple[int, int]:
    """(train, test) counts the generator produces for `args` (4000, 1000 by default)."""
    total = (args["num_samples"] // NUM_CLASSES) * NUM_CLASSES
    train = int(total * args["train_split"])
    return train, total - train


def cache_path(root: Path, args: dict[str, Any]) -> Path:
    """`<root>/mnist1d/mnist1d-<12 hex of the args and package version>.npz`."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("mnist1d")
    except PackageNotFoundError:
        raise ImportError(
            "the mnist1d package generates the default dataset but is not "
            "installed; install it with `pip install mnist1d`"
        ) from None
    key = json.dumps({"args": args, "mnist1d": package}, sort_keys=True)
    return root / "mnist1d" / f"mnist1d-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"


def _read_cache(path: Path, args: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The cached arrays if the file is intact, else None with a warning saying why."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in _ARRAYS}
            stored_hash = str(npz["content_sha256"])
        n_train, n_test = expected_sizes(args)
        length = args["final_seq_length"]
        problem = None
        if arrays["x"].shape != (n_train, length) or arrays["x_test"].shape != (n_test, length):
            problem = (
                f"x shapes {arrays['x'].shape}/{arrays['x_test'].shape}, expected "
                f"{(n_train, length)}/{(n_test, length)}"
            )
        elif arrays["y"].shape != (n_train,) or arrays["y_test"].shape != (n_test,):
            problem = f"y shapes {arrays['y'].shape}/{arrays['y_test'].shape}, expected {(n_train,)}/{(n_test,)}"
        elif content_sha256(arrays) != stored_hash:
            problem = "content SHA-256 does not match the one stored with it"
        if problem is None:
            return arrays
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        problem = f"unreadable ({type(exc).__name__}: {exc})"
    warnings.warn(f"{path}: damaged MNIST-1D cache ({problem}); rebuilding it.", stacklevel=3)
    return None


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a half-written cache."""
    atomic_write(path, lambda handle: np.savez(handle, content_sha256=np.array(content_sha256(arrays)), **arrays))


def load_arrays(root: Path, args: dict[str, Any]) -> dict[str, np.ndarray]:
    """The generator's arrays for `args`, from the cache or freshly built (then cached)."""
    path = cache_path(root, args)
    arrays = _read_cache(path, args)
    if arrays is None:
        arrays = generate(args)
        _write_cache(path, arrays)
    return arrays


def load_mnist1d(root: str | os.PathLike | None = None, **overrides: Any) -> Dataset:
    """MNIST-1D as a `Dataset`: float32 `(N, 1, 40)` sequences (one channel, for Conv1d).

    Args:
        root: data directory (default `$NORMLAB_DATA` or the user cache dir).
        **overrides: generator arguments replacing the defaults, e.g. `num_samples=500`.
    """
    args = generator_args(**overrides)
    arrays = load_arrays(data_root(root), args)
    # (N, L) float64 -> (N, 1, L) float32: a channel axis so Conv1d models take it directly.
    train_x = torch.from_numpy(arrays["x"].astype(np.float32)).unsqueeze(1)
    test_x = torch.from_numpy(arrays["x_test"].astype(np.float32)).unsqueeze(1)
    mean, std = channel_stats(train_x)
    return Dataset(
        name="mnist1d",
        train_x=train_x,
        train_y=torch.from_numpy(arrays["y"].astype(np.int64)),
        test_x=test_x,
        test_y=torch.from_numpy(arrays["y_test"].astype(np.int64)),
        num_classes=NUM_CLASSES,
        input_shape=(1, args["final_seq_length"]),
        mean=mean,
        std=std,
    )
