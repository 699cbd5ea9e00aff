"""The other normalizations, as rank-agnostic modules over (N, C, *) input.

GroupNorm, LayerNorm and InstanceNorm wrap `torch.nn.functional.group_norm` (one computation,
three groupings); RMSNorm is written here because torch's RMSNorm puts a weight on every
normalized element, not one per channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab.layers import functional

__all__ = ["GroupNorm", "LayerNorm", "InstanceNorm", "RMSNorm", "default_num_groups"]


def default_num_groups(num_channels: int, max_groups: int = 32) -> int:
    """The largest divisor of `num_channels` that is <= `max_groups` (32 as in Wu & He 2018)."""
    return max(g for g in range(1, min(num_channels, max_groups) + 1) if num_channels % g == 0)


def _check_channels(x: Tensor, num_channels: int, name: str) -> None:
    if x.dim() < 2 or x.shape[1] != num_channels:
        raise ValueError(
            f"{name} expected input of shape (N, {num_channels}, *) with at least 2 "
            f"dims, got shape {tuple(x.shape)}; channels must be in dim 1"
        )


class _ChannelAffine(nn.Module):
    """Holds a per-channel weight (init 1) and optional bias (init 0), shape (C,)."""

    def __init__(self, num_channels: int, affine: bool, bias: bool, device, dtype) -> None:
        super().__init__()
        if not isinstance(num_channels, int) or num_channels < 1:
            raise ValueError(f"num_channels must be a positive int, got {num_channels!r}")
        self.num_channels = num_channels
        self.affine = affine
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.ones(num_channels, **factory)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels, **factory)) if affine and bias else None


class GroupNorm(_ChannelAffine):
    r"""Group normalization (Wu & He 2018): statistics per sample over groups of channels.

    .. math::
        y = \frac{x - \mathrm{E}_g[x]}{\sqrt{\mathrm{Var}_g[x] + \epsilon}} \gamma_c + \beta_c

    where E_g and Var_g (biased) run over the C/G channels of a group and all trailing dims,
    separately for every sample. Independent of the batch size; same in train and eval mode.

    Args:
        num_channels: C.
        num_groups: G, must divide C; default: the largest divisor of C that is <= 32.
        eps: added to the variance.
        affine: learn a per-channel gamma and beta.

    Shape: (N, C, *) -> same. (N, C) input works when C/G > 1.

    Example:
        >>> gn = GroupNorm(64)  # 32 groups of 2 channels
        >>> gn(torch.randn(4, 64, 8, 8)).shape
        torch.Size([4, 64, 8, 8])
    """

    def __init__(
        self,
        num_channels: int,
        num_groups: int | None = None,
        eps: float = 1e-5,
        affine: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(num_channels, affine, True, device, dtype)
        num_groups = default_num_groups(num_channels) if num_groups is None else num_groups
        if not isinstance(num_groups, int) or num_groups < 1 or num_channels % num_groups:
            raise ValueError(
                f"num_groups must be a positive divisor of num_channels={num_channels}, got "
                f"{num_groups!r}; e.g. num_groups={default_num_groups(num_channels)}"
            )
        self.num_groups = num_groups
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        _check_channels(x, self.num_channels, type(self).__name__)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        groups = f"num_groups={self.num_groups}"
        return f"{self.num_channels}, {groups}, eps={self.eps}, affine={self.affine}"


class LayerNorm(GroupNorm):
    r"""Layer normalization over every dim but N, with a per-channel gamma and beta.

    Equal to GroupNorm with one group: for (N, C) features it normalizes over C, for images over
    (C, H, W) (Ba et al. 2016, as used for CNNs).

    .. math::
        y = \frac{x - \mathrm{E}_{C,*}[x]}{\sqrt{\mathrm{Var}_{C,*}[x] + \epsilon}}
            \gamma_c + \beta_c

    Example:
        >>> ln = LayerNorm(16)
        >>> ln(torch.randn(4, 16)).shape
        torch.Size([4, 16])
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True, device=None, dtype=None):
        super().__init__(num_channels, 1, eps, affine, device, dtype)


class InstanceNorm(GroupNorm):
    r"""Instance normalization (Ulyanov et al. 2016): per sample and channel over trailing dims.

    Equal to GroupNorm with C groups. Unlike torch's InstanceNorm*d it is rank-agnostic and
    affine by default (so it can replace BN's gamma/beta), and keeps no running statistics.

    A (N, C) input has a single value per (sample, channel): normalizing it would output beta
    whatever the input, so it raises a ValueError instead; use "layer" or "group" for features.

    Example:
        >>> inorm = InstanceNorm(3)
        >>> inorm(torch.randn(2, 3, 8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True, device=None, dtype=None):
        super().__init__(num_channels, num_channels, eps, affine, device, dtype)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 3:
            raise ValueError(
                f"instance norm needs spatial dims (N, C, L) or (N, C, H, W), got shape "
                f"{tuple(x.shape)}: with one value per sample and channel the output would be "
                f"constant; use norm 'layer', 'group' or 'batch' for (N, C) features"
            )
        return super().forward(x)


class RMSNorm(_ChannelAffine):
    r"""RMS normalization (Zhang & Sennrich 2019) over every dim but N, per-channel gamma.

    .. math::
        y = \frac{x}{\sqrt{\mathrm{E}_{C,*}[x^2] + \epsilon}} \gamma_c

    No mean subtraction and no beta; on input with zero mean over (C, *) it equals LayerNorm
    without bias. Statistics are computed in float32 for half/bfloat16 input.

    Example:
        >>> rms = RMSNorm(16)
        >>> rms(torch.randn(4, 16, 10)).shape
        torch.Size([4, 16, 10])
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True, device=None, dtype=None):
        super().__init__(num_channels, affine, False, device, dtype)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        _check_channels(x, self.num_channels, "RMSNorm")
        xf = x.to(functional.compute_dtype(x.dtype))
        dims = tuple(range(1, x.dim()))
        y = xf * torch.rsqrt(xf.pow(2).mean(dims, keepdim=True) + self.eps)  # (N, C, *)
        if self.weight is not None:
            y = y * self.weight.view(functional.channel_shape(x))
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine={self.affine}"
