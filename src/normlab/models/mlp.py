"""The seed notebook's multi-layer perceptron, with a norm after every hidden Linear."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from normlab.models.blocks import check_norm_position, norm_act

SEED_MLP_HIDDEN = (512, 256)
"""The seed notebook's hidden widths (the default)."""

MNIST1D_MLP_HIDDEN = (100, 100)
"""The MNIST-1D paper's MLP baseline (Greydanus & Kobak 2024): `hidden=[100, 100]`."""


class MLP(nn.Module):
    """Flatten -> [Linear -> norm -> act] x len(hidden) -> Linear to classes.

    Each hidden block computes ``act(norm(W u + b))`` (``norm_position="before_act"``, the
    BN paper's placement) or ``norm(act(W u + b))`` (``"after_act"``).

    Args:
        input_shape: per-sample shape, e.g. (1, 40) for MNIST-1D or (3, 32, 32) for CIFAR;
            it is flattened to ``prod(input_shape)`` features.
        num_classes: output logits.
        hidden: hidden widths; default the seed's (512, 256); the MNIST-1D paper used
            (100, 100) (`MNIST1D_MLP_HIDDEN`).
        norm, norm_kwargs: any `normlab.layers.create_norm` name and its extra arguments.
        norm_position: "before_act" or "after_act".
        activation: "relu", "sigmoid" or "gelu".

    Shapes: input (N, *input_shape) -> logits (N, num_classes).

    Example:
        >>> model = MLP((1, 40), 10, hidden=[100, 100], norm="batch")
        >>> model(torch.randn(8, 1, 40)).shape
        torch.Size([8, 10])
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        hidden: list[int] | tuple[int, ...] | None = None,
        norm: str = "batch",
        norm_kwargs: dict[str, Any] | None = None,
        norm_position: str = "before_act",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_norm_position(norm_position)
        widths = list(SEED_MLP_HIDDEN if hidden is None else hidden)
        features = math.prod(input_shape)
        blocks = []
        for width in widths:
            pair = norm_act(
                width, norm=norm, norm_kwargs=norm_kwargs, norm_position=norm_position, activation=activation
            )
            linear = nn.Linear(features, width)
            blocks.append(nn.Sequential(OrderedDict([("linear", linear), *pair])))
            features = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, *input_shape) -> (N, prod(input_shape)) -> (N, num_classes)
        return self.head(self.blocks(x.flatten(1)))
