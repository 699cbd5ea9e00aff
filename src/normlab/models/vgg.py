"""VGG-11 for 32x32 images (Simonyan & Zisserman 2015, configuration A; CIFAR head)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from normlab.models.blocks import (
    check_norm_position,
    conv,
    global_avg_pool,
    max_pool,
    needs_bias,
    norm_act,
    spatial_rank,
)

# Configuration A: numbers are 3x3 conv widths, "M" is 2x max pooling.
VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    """Stacked [3x3 conv -> norm -> act] with max pooling, global average pool, Linear.

    On 32x32 input the five poolings reduce the map to 1x1 (the usual CIFAR VGG-11 with a
    512 -> classes head). A pooling is skipped once the map is down to size 1, so smaller
    inputs (28x28 MNIST, length-40 MNIST-1D with Conv1d) run too.

    Args:
        input_shape: (C, L) or (C, H, W); num_classes: output logits.
        norm, norm_kwargs, norm_position, activation: as in `MLP`.

    Shapes: (N, 3, 32, 32) -> (N, num_classes).

    Example:
        >>> VGG((3, 32, 32), 10, norm="batch")(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        norm: str = "batch",
        norm_kwargs: dict[str, Any] | None = None,
        norm_position: str = "before_act",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_norm_position(norm_position)
        rank = spatial_rank(input_shape, "vgg11")
        kw = dict(norm=norm, norm_kwargs=norm_kwargs, norm_position=norm_position, activation=activation)
        layers: list[nn.Module] = []
        c_in, size = input_shape[0], min(input_shape[1:])
        for item in VGG11:
            if item == "M":
                if size >= 2:
                    layers.append(max_pool(rank))
                    size //= 2
                continue
            pair = [m for _, m in norm_act(item, **kw)]
            layers += [conv(rank, c_in, item, 3, 1, 1, bias=needs_bias(pair[0])), *pair]
            c_in = item
        self.features = nn.Sequential(*layers)
        self.pool = global_avg_pool(rank)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, *S) -> (N, 512, *S/32) -> (N, 512) -> (N, classes)
        return self.head(self.pool(self.features(x)).flatten(1))
