"""Build any normalization by name: `create_norm("batch", 64)`.

Every norm returned is rank-agnostic: the same module takes (N, C), (N, C, L), (N, C, H, W)
and (N, C, D, H, W) input (InstanceNorm needs a spatial dim and says so), so a model can call
`create_norm(name, C)` without knowing the rank of what it normalizes.

| name         | module                    | statistics over                         |
| ------------ | ------------------------- | --------------------------------------- |
| none         | torch.nn.Identity         | -                                       |
| batch        | BatchNorm                 | N and trailing dims, per channel        |
| ghost_batch  | GhostBatchNorm            | virtual batches of N, per channel       |
| batch_renorm | BatchRenorm               | as batch, corrected toward running ones |
| group        | GroupNorm                 | per sample, groups of channels          |
| layer        | LayerNorm (= 1 group)     | per sample, all of (C, *)               |
| instance     | InstanceNorm (= C groups) | per sample and channel, trailing dims   |
| rms          | RMSNorm                   | per sample, RMS over (C, *)             |
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from normlab.layers.batchnorm import BatchNorm
from normlab.layers.norms import GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from normlab.layers.variants import BatchRenorm, GhostBatchNorm

__all__ = ["create_norm", "norm_names"]


def _identity(num_features: int) -> nn.Module:
    return nn.Identity()


_NORMS: dict[str, Callable[..., nn.Module]] = {
    "none": _identity,
    "batch": BatchNorm,
    "ghost_batch": GhostBatchNorm,
    "batch_renorm": BatchRenorm,
    "group": GroupNorm,
    "layer": LayerNorm,
    "instance": InstanceNorm,
    "rms": RMSNorm,
}


def norm_names() -> list[str]:
    """The registered norm names, in registry order."""
    return list(_NORMS)


def norm_kwargs(name: str) -> list[str]:
    """The keyword arguments `create_norm(name, C, **kw)` accepts for this norm."""
    params = list(inspect.signature(_lookup(name)).parameters)
    return params[1:]  # the first is num_features / num_channels


def _lookup(name: str) -> Callable[..., nn.Module]:
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _NORMS:
        raise ValueError(f"unknown norm {name!r}; valid names: {', '.join(_NORMS)}")
    return _NORMS[key]


def create_norm(name: str, num_features: int, **kwargs: Any) -> nn.Module:
    """Build the norm registered as `name` for `num_features` channels.

    Args:
        name: one of `norm_names()` (case-insensitive).
        num_features: C, the channel count (dim 1 of the input).
        **kwargs: that norm's own arguments, e.g. `num_groups=8` for "group",
            `virtual_batch_size=16` for "ghost_batch", `momentum=None` for "batch".

    Raises:
        ValueError: unknown name (lists the valid ones), or an argument the norm does not take
            (lists the ones it does).

    Example:
        >>> norm = create_norm("group", 64, num_groups=8)
        >>> norm(torch.randn(2, 64, 4, 4)).shape
        torch.Size([2, 64, 4, 4])
    """
    factory = _lookup(name)
    accepted = norm_kwargs(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"norm {name!r} does not accept argument(s) {', '.join(unknown)}; it accepts: "
            f"{', '.join(accepted) if accepted else 'no arguments'}"
        )
    return factory(num_features, **kwargs)
