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
| noisy_batch  | NoisyBatchNorm            | as batch, then time-varying noise       |
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from normlab.layers.batchnorm import BatchNorm
from normlab.layers.noisy import NoisyBatchNorm
from normlab.layers.norms import GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from normlab.layers.variants import BatchRenorm, GhostBatchNorm

__all__ = ["create_norm", "norm_kwargs", "norm_names", "register_norm"]

NormFactory = Callable[..., nn.Module]
"""A class or callable (function, functools.partial) taking num_features first."""


def _identity(num_features: int) -> nn.Module:
    return nn.Identity()


_NORMS: dict[str, NormFactory] = {
    "none": _identity,
    "batch": BatchNorm,
    "ghost_batch": GhostBatchNorm,
    "batch_renorm": BatchRenorm,
    "group": GroupNorm,
    "layer": LayerNorm,
    "instance": InstanceNorm,
    "rms": RMSNorm,
    "noisy_batch": NoisyBatchNorm,
}
_BUILT_IN = frozenset(_NORMS)


def register_norm(name: str, factory: NormFactory, *, replace: bool = False) -> None:
    """Make `factory` buildable as `create_norm(name, C, **kw)`, so models, run configs and
    sweeps accept `norm=name`.

    Args:
        name: the new name (lower case letters, digits, "_" and "-"; stored lower case).
        factory: `factory(num_features, **kw) -> nn.Module`: a class, a function or a
            functools.partial. Its other named parameters are the keyword arguments a run
            config's `norm_kwargs` may set.
        replace: allow replacing a name registered before (never a built-in one).

    Registration lives in this process: a sweep on the process or Ray executor runs in fresh
    workers, so register in a module those workers import too.

    Example:
        >>> register_norm("frozen_batch", functools.partial(BatchNorm, momentum=0.0))
        >>> create_norm("frozen_batch", 16)
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if not isinstance(key, str) or not key or not all(c.isalnum() or c in "_-" for c in key):
        raise ValueError(f"register_norm expected a name of letters, digits, '_' or '-', got {name!r}")
    if not callable(factory):
        raise TypeError(
            f"register_norm expected a class or callable factory(num_features, **kw) for "
            f"{name!r}, got {type(factory).__name__}"
        )
    if key in _BUILT_IN or (key in _NORMS and not replace):
        why = "a built-in norm" if key in _BUILT_IN else "registered already"
        raise ValueError(
            f"norm {key!r} is {why}; choose another name" + ("" if key in _BUILT_IN else " or pass replace=True")
        )
    _NORMS[key] = factory


def norm_names() -> list[str]:
    """The registered norm names, in registry order (built-ins first)."""
    return list(_NORMS)


def norm_kwargs(name: str | NormFactory) -> list[str]:
    """The named keyword arguments `create_norm(name, C, **kw)` accepts for this norm (run
    configs may set exactly these in `norm_kwargs`)."""
    return [p.name for p in _parameters(_lookup(name)) if p.kind not in _VARIADIC]


_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _parameters(factory: NormFactory) -> list[inspect.Parameter]:
    """The factory's parameters after the first (num_features)."""
    return list(inspect.signature(factory).parameters.values())[1:]


def _lookup(name: str | NormFactory) -> NormFactory:
    if callable(name):
        return name
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _NORMS:
        raise ValueError(f"unknown norm {name!r}; valid names: {', '.join(_NORMS)}")
    return _NORMS[key]


def create_norm(name: str | NormFactory, num_features: int, **kwargs: Any) -> nn.Module:
    """Build the norm registered as `name` (or made by the factory `name`) for `num_features`.

    Args:
        name: one of `norm_names()` (case-insensitive), or a factory: a class, function or
            functools.partial called as `name(num_features, **kwargs)`.
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
        >>> create_norm(functools.partial(nn.GroupNorm, 8), 64)  # GroupNorm(8, 64)
    """
    factory = _lookup(name)
    accepted = norm_kwargs(factory)
    unknown = sorted(set(kwargs) - set(accepted))
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in _parameters(factory))
    if unknown and not takes_any:
        label = name if isinstance(name, str) else getattr(name, "__name__", repr(name))
        raise ValueError(
            f"norm {label!r} does not accept argument(s) {', '.join(unknown)}; it accepts: "
            f"{', '.join(accepted) if accepted else 'no arguments'}"
        )
    return factory(num_features, **kwargs)
