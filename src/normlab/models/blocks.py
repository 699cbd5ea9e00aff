"""Building blocks shared by every model: activation by name, norm + activation ordering,
rank-generic convolutions (1-D signals such as MNIST-1D, 2-D images) and weight scaling.

Every norm comes from `normlab.layers.create_norm`, which is rank-agnostic, so one block works
on (N, C), (N, C, L) and (N, C, H, W) activations.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from normlab.layers import create_norm

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
NORM_POSITIONS = ("before_act", "after_act")


def make_activation(name: str) -> nn.Module:
    """A fresh activation module (one per use, so probes can hook each layer separately)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def make_norm(norm: str, num_features: int, norm_kwargs: dict[str, Any] | None) -> nn.Module:
    """`create_norm(norm, num_features, **norm_kwargs)`."""
    return create_norm(norm, num_features, **(norm_kwargs or {}))


def check_norm_position(norm_position: str) -> None:
    """Raise a clear error for a norm position other than before_act / after_act."""
    if norm_position not in NORM_POSITIONS:
        raise ValueError(f"unknown norm_position {norm_position!r}; expected one of {list(NORM_POSITIONS)}")


def norm_act(
    num_features: int,
    *,
    norm: str,
    norm_kwargs: dict[str, Any] | None,
    norm_position: str,
    activation: str,
) -> list[tuple[str, nn.Module]]:
    """[("norm", norm), ("act", act)] for "before_act" (Ioffe & Szegedy: normalize x = Wu + b),
    [("act", act), ("norm", norm)] for "after_act"."""
    check_norm_position(norm_position)
    layers = [("norm", make_norm(norm, num_features, norm_kwargs)), ("act", make_activation(activation))]
    return layers if norm_position == "before_act" else layers[::-1]


def needs_bias(next_layer: nn.Module) -> bool:
    """Whether a Linear/conv keeps its bias, given the module right after it: not when that
    is a norm with a per-channel shift (beta) of its own, which replaces it. An activation,
    "none", RMSNorm and affine=False norms have no shift, so the bias stays."""
    return getattr(next_layer, "bias", None) is None


def spatial_rank(input_shape: tuple[int, ...], model: str) -> int:
    """1 for (C, L) signals, 2 for (C, H, W) images; anything else is a clear error."""
    if len(input_shape) not in (2, 3):
        raise ValueError(
            f"model {model!r} expects a per-sample input shape (C, L) or (C, H, W), got "
            f"{tuple(input_shape)}; use model='mlp' for flat features"
        )
    return len(input_shape) - 1


def conv(
    rank: int, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = True
) -> nn.Module:
    """Conv1d for rank 1, Conv2d for rank 2 (same arguments)."""
    cls = nn.Conv1d if rank == 1 else nn.Conv2d
    return cls(c_in, c_out, kernel, stride=stride, padding=padding, bias=bias)


def max_pool(rank: int) -> nn.Module:
    """2x max pooling in each spatial dimension."""
    return nn.MaxPool1d(2) if rank == 1 else nn.MaxPool2d(2)


def global_avg_pool(rank: int) -> nn.Module:
    """Average over all spatial positions: (N, C, *S) -> (N, C, 1...)."""
    return nn.AdaptiveAvgPool1d(1) if rank == 1 else nn.AdaptiveAvgPool2d(1)


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution along one dimension (PyTorch's formula)."""
    return (size + 2 * padding - kernel) // stride + 1


def scale_init_(model: nn.Module, init_scale: float) -> nn.Module:
    """Multiply the initial weights of every Linear/Conv by `init_scale` (bad-init studies).

    Norm gamma/beta and biases keep their defaults: the study varies the scale of the
    pre-activations W u, which BN is claimed to make irrelevant.
    """
    if init_scale != 1.0:
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                module.weight.data.mul_(init_scale)
    return model
