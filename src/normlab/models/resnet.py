"""CIFAR-style residual networks (He et al. 2016): ResNet-20 and ResNet-18, 1-D or 2-D."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from normlab.models.blocks import (
    check_norm_position,
    conv,
    global_avg_pool,
    make_activation,
    make_norm,
    needs_bias,
    norm_act,
    spatial_rank,
)

# (widths per stage, blocks per stage, stem width)
RESNET_SPECS = {
    "resnet20": ((16, 32, 64), (3, 3, 3), 16),  # He et al. 2016, section 4.2 (CIFAR, n = 3)
    "resnet18": ((64, 128, 256, 512), (2, 2, 2, 2), 64),  # ImageNet widths, 3x3 CIFAR stem
}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 conv + norm) shortcut.

    before_act: ``act(norm2(conv2(act(norm1(conv1 x)))) + shortcut(x))`` (He et al.);
    after_act:  ``norm2(act(conv2(norm1(act(conv1 x))) + shortcut(x)))``.
    Shapes: (N, c_in, *S) -> (N, c_out, *S / stride).
    """

    def __init__(
        self,
        rank: int,
        c_in: int,
        c_out: int,
        stride: int,
        *,
        norm: str,
        norm_kwargs: dict[str, Any] | None,
        norm_position: str,
        activation: str,
    ) -> None:
        super().__init__()
        check_norm_position(norm_position)
        self.before = norm_position == "before_act"
        # norms first (the convs' bias depends on them), registered after their conv so the
        # state-dict keys keep the conv1, norm1, act1, ... order
        norm1, norm2 = make_norm(norm, c_out, norm_kwargs), make_norm(norm, c_out, norm_kwargs)
        bias = not self.before or needs_bias(norm1)
        self.conv1 = conv(rank, c_in, c_out, 3, stride, 1, bias=bias)
        self.norm1 = norm1
        self.act1 = make_activation(activation)
        self.conv2 = conv(rank, c_out, c_out, 3, 1, 1, bias=bias)
        self.norm2 = norm2
        self.act2 = make_activation(activation)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            # projection shortcut (option B): 1x1 conv, normalized like the main branch
            shortcut_norm = make_norm(norm, c_out, norm_kwargs)
            shortcut_conv = conv(rank, c_in, c_out, 1, stride, 0, bias=needs_bias(shortcut_norm))
            self.shortcut = nn.Sequential(shortcut_conv, shortcut_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.before:
            out = self.act1(self.norm1(self.conv1(x)))
            return self.act2(self.norm2(self.conv2(out)) + self.shortcut(x))
        out = self.norm1(self.act1(self.conv1(x)))
        return self.norm2(self.act2(self.conv2(out) + self.shortcut(x)))


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem, stages of `BasicBlock`s (stride 2 between), global pool, Linear.

    `resnet20` is He et al.'s CIFAR net (16/32/64 channels, 3 blocks per stage, 0.27M params);
    `resnet18` is the common CIFAR variant of ResNet-18 (64..512 channels, 2 blocks per
    stage, 11M params). On (C, L) input every convolution is 1-D, so both run on MNIST-1D.

    Args:
        variant: "resnet20" or "resnet18".
        input_shape: (C, L) or (C, H, W).
        num_classes: output logits.
        norm, norm_kwargs, norm_position, activation: as in `MLP`.

    Shapes: (N, C, H, W) -> (N, num_classes).

    Example:
        >>> ResNet("resnet20", (3, 32, 32), 10)(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        variant: str,
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
        if variant not in RESNET_SPECS:
            raise ValueError(f"unknown ResNet variant {variant!r}; expected one of {sorted(RESNET_SPECS)}")
        rank = spatial_rank(input_shape, variant)
        widths, depths, stem = RESNET_SPECS[variant]
        kw = dict(norm=norm, norm_kwargs=norm_kwargs, norm_position=norm_position, activation=activation)
        pair = [m for _, m in norm_act(stem, **kw)]
        stem_conv = conv(rank, input_shape[0], stem, 3, 1, 1, bias=needs_bias(pair[0]))
        self.stem = nn.Sequential(stem_conv, *pair)
        stages, c_in = [], stem
        for i, (width, depth) in enumerate(zip(widths, depths)):
            blocks = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(rank, c_in, width, stride, **kw))
                c_in = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = global_avg_pool(rank)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, *S) -> (N, widths[-1], *S / 2^(stages-1)) -> pool -> (N, widths[-1]) -> logits
        return self.head(self.pool(self.stages(self.stem(x))).flatten(1))
