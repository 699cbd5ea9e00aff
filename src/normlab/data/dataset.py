"""The `Dataset` record every loader returns, its error type, and per-channel statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


class DatasetError(ValueError):
    """A dataset file is missing, damaged or in the wrong format; the message says how to fix it.

    It subclasses `ValueError` so the CLI reports it as a user error (exit code 2), not a bug.
    """


@dataclass(frozen=True, repr=False)
class Dataset:
    """Train and test splits held as tensors, with the facts a model needs to be built for them.

    Images stay `uint8` (values 0..255) until a batch is normalized; real-valued data (mnist1d,
    synthetic) is `float32`. `mean`/`std` are per channel and are computed from the *train*
    split only, in the units the loader normalizes in: for `uint8` images that is pixel/255
    (so CIFAR-10's red mean is about 0.49). The seed notebook hard-coded 0.5/0.5 for every
    channel; that is only a placeholder which leaves the inputs off-centre and mis-scaled,
    which matters here because a network *without* BN sees its inputs exactly as given.

    Args:
        name: registry name (`"cifar10"`, `"mnist1d"`, ...).
        train_x: `(N_train, *input_shape)`, uint8 or float32, channels first.
        train_y: `(N_train,)` int64 class labels in `[0, num_classes)`.
        test_x: `(N_test, *input_shape)`, same dtype as `train_x`.
        test_y: `(N_test,)` int64.
        num_classes: number of classes.
        input_shape: one sample's shape, channels first: mnist1d `(1, 40)`, MNIST
            `(1, 28, 28)`, CIFAR `(3, 32, 32)`.
        mean: `(C,)` float32 per-channel mean of the train split (after /255 for uint8).
        std: `(C,)` float32 per-channel population standard deviation of the train split.

    Example:
        >>> ds = load_dataset("synthetic", shape=(3, 8, 8), train_size=100, test_size=20)
        >>> ds.train_x.shape, ds.input_shape, ds.mean.shape
        (torch.Size([100, 3, 8, 8]), (3, 8, 8), torch.Size([3]))
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    mean: torch.Tensor
    std: torch.Tensor

    def __post_init__(self) -> None:
        # These are invariants of our own loaders, so a failure here is a bug, but the message
        # still says which field is off so that a hand-built Dataset is easy to fix.
        shape = tuple(self.input_shape)
        splits = (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y))
        for split, x, y in splits:
            if tuple(x.shape[1:]) != shape:
                raise ValueError(
                    f"{self.name}: {split}_x samples have shape {tuple(x.shape[1:])}, expected input_shape {shape}"
                )
            if y.dtype != torch.int64 or y.ndim != 1 or len(y) != len(x):
                raise ValueError(
                    f"{self.name}: {split}_y must be int64 of shape ({len(x)},), got {y.dtype} {tuple(y.shape)}"
                )
        if self.mean.shape != (shape[0],) or self.std.shape != (shape[0],):
            raise ValueError(
                f"{self.name}: mean/std must have shape ({shape[0]},) (one per "
                f"channel), got {tuple(self.mean.shape)} and {tuple(self.std.shape)}"
            )

    @property
    def num_channels(self) -> int:
        """Channels per sample (`input_shape[0]`)."""
        return self.input_shape[0]

    def __repr__(self) -> str:
        # The default dataclass repr would print every tensor element.
        return (
            f"Dataset(name={self.name!r}, train={tuple(self.train_x.shape)} "
            f"{self.train_x.dtype}, test={tuple(self.test_x.shape)}, "
            f"num_classes={self.num_classes}, input_shape={self.input_shape})"
        )


INPUT_NORMS = ("train_split", "half")
"""How inputs are normalized per channel: "train_split", by the training split's own mean and
std (`Dataset.mean/std`); "half", by mean 0.5 and std 0.5 (the seed notebook's
`transforms.Normalize((0.5,)*3, (0.5,)*3)`, which maps pixel/255 in [0, 1] to [-1, 1])."""


def input_stats(dataset: Dataset, how: str = "train_split") -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel `(mean, std)`, float32 `(C,)` each, that the loader normalizes `dataset`
    with, chosen by `how` (one of INPUT_NORMS)."""
    if how == "train_split":
        return dataset.mean, dataset.std
    if how == "half":
        half = torch.full((dataset.num_channels,), 0.5, dtype=torch.float32)
        return half, half.clone()
    raise ValueError(f"input normalization must be one of {list(INPUT_NORMS)}, got {how!r}")


def channel_stats(x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population std of `x` `(N, C, ...)`, float32 `(C,)` each.

    uint8 input is measured as value/255 (the loader's units), exactly, from a histogram of
    the 256 possible values, so a 50k-image CIFAR split needs no float copy of itself.
    """
    arr = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    channels = arr.shape[1]
    means, stds = np.empty(channels), np.empty(channels)
    for c in range(channels):
        values = arr[:, c].reshape(-1)
        if arr.dtype == np.uint8:
            counts = np.bincount(values, minlength=256).astype(np.float64)
            levels = np.arange(256, dtype=np.float64) / 255.0
            total = counts.sum()
            means[c] = (counts * levels).sum() / total
            stds[c] = np.sqrt((counts * (levels - means[c]) ** 2).sum() / total)
        else:
            values = values.astype(np.float64)
            means[c] = values.mean()
            stds[c] = values.std()
    return torch.from_numpy(means.astype(np.float32)), torch.from_numpy(stds.astype(np.float32))
