"""A small convolutional net: the MNIST-1D paper's CNN on 1-D signals, its 2-D twin on images."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from normlab.models.blocks import (
    check_norm_position,
    conv,
    conv_out,
    needs_bias,
    norm_act,
    spatial_rank,
)

# (kernel, stride, padding) of the three convolutions: Greydanus & Kobak (2024), MNIST-1D
# `ConvBase`; on a length-40 signal the lengths go 40 -> 19 -> 10 -> 5 (25 x 5 = 125 features).
CNN_LAYERS = ((5, 2, 1), (3, 2, 1), (3, 2, 1))


class CNN(nn.Module):
    """Three [conv -> norm -> act] blocks, flatten, Linear to classes.

    On (C, L) input the convolutions are Conv1d with `channels` = 25, the MNIST-1D paper's
    baseline (no norm there: `norm="none"`); on (C, H, W) input they are Conv2d with the same
    kernels and strides. A convolution followed directly by a norm with a shift (beta) has no
    bias (the shift replaces it).

    Args:
        input_shape: (C, L) or (C, H, W).
        num_classes: output logits.
        channels: width of every conv layer (default 25; `hidden=[c]` in `build_model`).
        norm, norm_kwargs, norm_position, activation: as in `MLP`.

    Shapes: (N, C, L) -> (N, num_classes); (N, C, H, W) -> (N, num_classes).

    Example:
        >>> CNN((1, 40), 10, norm="none")(torch.randn(4, 1, 40)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        channels: int = 25,
        norm: str = "batch",
        norm_kwargs: dict[str, Any] | None = None,
        norm_position: str = "before_act",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_norm_position(norm_position)
        rank = spatial_rank(input_shape, "cnn")
        c_in, sizes = input_shape[0], list(input_shape[1:])
        blocks = []
        for kernel, stride, padding in CNN_LAYERS:
            pair = norm_act(
                channels, norm=norm, norm_kwargs=norm_kwargs, norm_position=norm_position, activation=activation
            )
            layer = conv(rank, c_in, channels, kernel, stride, padding, bias=needs_bias(pair[0][1]))
            blocks.append(nn.Sequential(OrderedDict([("conv", layer), *pair])))
            sizes = [conv_out(s, kernel, stride, padding) for s in sizes]
            if min(sizes) < 1:
                # a size of 3 is the smallest that survives: 3 -> 1 -> 1 -> 1
                raise ValueError(
                    f"cnn needs a spatial size of at least 3 per dimension, got input_shape "
                    f"{tuple(input_shape)}; use a larger input or model='mlp'"
                )
            c_in = channels
        self.blocks = nn.Sequential(*blocks)
        features = channels
        for s in sizes:
            features *= s
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, *S) -> (N, channels, *S/8) -> (N, channels * prod(S/8)) -> (N, classes)
        return self.head(self.blocks(x).flatten(1))
