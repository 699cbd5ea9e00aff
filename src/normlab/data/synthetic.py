"""Synthetic class-conditional Gaussian data of any shape, for tests and benchmarks.

Each class `c` has a mean `mu_c ~ N(0, I)` (one value per input element, drawn once from the
seed); a sample of class `c` is `x = mu_c + difficulty * eps`, `eps ~ N(0, I)`. Two class means
lie about `sqrt(2 * D)` apart for `D` input elements, so `difficulty` (the noise standard
deviation) sets how much the classes overlap: 0 is trivially separable, large values make the
task hard. `uint8=True` quantizes to CIFAR-like bytes, `clamp(round(128 + 32 * x))`, to
exercise the uint8 image path (normalization, augmentation) without any file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from normlab.data.dataset import Dataset, channel_stats


def load_synthetic(
    root: str | os.PathLike | None = None,
    *,
    shape: Sequence[int] = (1, 40),
    num_classes: int = 10,
    train_size: int = 4000,
    test_size: int = 1000,
    difficulty: float = 1.0,
    uint8: bool = False,
    seed: int = 0,
) -> Dataset:
    """Generate a balanced-in-expectation Gaussian classification dataset in memory.

    Args:
        root: unused (nothing is stored); accepted so every loader has the same signature.
        shape: one sample's shape, channels first, e.g. `(1, 40)` or `(3, 32, 32)`.
        num_classes: number of classes (>= 2).
        train_size, test_size: samples per split.
        difficulty: noise standard deviation relative to the spread of the class means (>= 0).
        uint8: quantize to uint8 like an image (values 128 + 32 x, clipped to 0..255).
        seed: generator seed; the same arguments always give the same tensors.

    Example:
        >>> ds = load_synthetic(shape=(3, 32, 32), train_size=256, test_size=64, uint8=True)
        >>> ds.train_x.dtype, ds.input_shape
        (torch.uint8, (3, 32, 32))
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(
            f"shape must be a channels-first sample shape of positive sizes, e.g. (3, 32, 32); got {shape}"
        )
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if train_size < 1 or test_size < 1:
        raise ValueError(f"train_size and test_size must be >= 1, got {train_size}, {test_size}")
    if not difficulty >= 0:
        raise ValueError(f"difficulty must be >= 0 (noise std), got {difficulty}")
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn((num_classes, *shape), generator=gen)  # (K, *shape)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, num_classes, (n,), generator=gen)
        x = means[y] + difficulty * torch.randn((n, *shape), generator=gen)
        if uint8:
            x = (128 + 32 * x).round().clamp(0, 255).to(torch.uint8)
        return x, y

    train_x, train_y = split(train_size)
    test_x, test_y = split(test_size)
    mean, std = channel_stats(train_x)
    return Dataset(
        name="synthetic",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=num_classes,
        input_shape=shape,
        mean=mean,
        std=std,
    )
