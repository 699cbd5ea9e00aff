"""Build any model by name: `build_model("mlp", (1, 40), 10, norm="batch")`."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from normlab.models.blocks import ACTIVATIONS, check_norm_position, scale_init_
from normlab.models.cnn import CNN
from normlab.models.mlp import MLP
from normlab.models.resnet import ResNet
from normlab.models.vgg import VGG


def _mlp(input_shape, num_classes, hidden, **kw) -> nn.Module:
    return MLP(input_shape, num_classes, hidden=hidden, **kw)


def _cnn(input_shape, num_classes, hidden, **kw) -> nn.Module:
    if hidden is not None and len(hidden) != 1:
        raise ValueError(f"model 'cnn' takes hidden=[channels] (one width for its three convs), got {hidden}")
    return CNN(input_shape, num_classes, channels=hidden[0] if hidden else 25, **kw)


def _fixed(cls: Callable[..., nn.Module], name: str, input_shape, num_classes, hidden, **kw):
    if hidden is not None:
        raise ValueError(
            f"model {name!r} has fixed widths, got hidden={hidden}; leave hidden unset "
            f"(hidden applies to 'mlp' and 'cnn')"
        )
    return cls(input_shape, num_classes, **kw)


_MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "resnet20": partial(_fixed, partial(ResNet, "resnet20"), "resnet20"),
    "resnet18": partial(_fixed, partial(ResNet, "resnet18"), "resnet18"),
    "vgg11": partial(_fixed, VGG, "vgg11"),
}


def model_names() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def build_model(
    name: str,
    input_shape: tuple[int, ...] | list[int],
    num_classes: int,
    *,
    norm: str = "batch",
    norm_kwargs: dict[str, Any] | None = None,
    norm_position: str = "before_act",
    activation: str = "relu",
    hidden: list[int] | None = None,
    init_scale: float = 1.0,
) -> nn.Module:
    """Build a registered model for a dataset's per-sample `input_shape` and `num_classes`.

    Args:
        name: one of `model_names()` (mlp, cnn, resnet20, resnet18, vgg11).
        input_shape: per-sample shape, channels first: (1, 40) MNIST-1D, (3, 32, 32) CIFAR.
        num_classes: number of output logits.
        norm, norm_kwargs: any `normlab.layers.create_norm` name ("none" for no norm).
        norm_position: "before_act" (Ioffe & Szegedy) or "after_act".
        activation: "relu", "sigmoid" or "gelu".
        hidden: MLP widths (default the seed's [512, 256]; the MNIST-1D paper's MLP is
            [100, 100]) or [channels] for the CNN (default 25); other models: None.
        init_scale: multiplies the initial Linear/Conv weights (bad-initialization study).

    Example:
        >>> build_model("mlp", (1, 40), 10, hidden=[100, 100], norm="none")
    """
    key = name.strip().lower()
    if key not in _MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {model_names()}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
    check_norm_position(norm_position)
    if init_scale <= 0:
        raise ValueError(f"init_scale must be > 0, got {init_scale}")
    model = _MODELS[key](
        tuple(input_shape),
        num_classes,
        hidden,
        norm=norm,
        norm_kwargs=norm_kwargs,
        norm_position=norm_position,
        activation=activation,
    )
    return scale_init_(model, init_scale)
