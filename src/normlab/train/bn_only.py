"""Train only BN's gamma and beta, or a matched number of random parameters (Frankle et al. 2021,
"Training BatchNorm and Only BatchNorm").

Frankle et al. freeze every weight at its random initialization and train only the BN affine
parameters; deep ResNets then reach far above chance (e.g. 82% on CIFAR-10 for ResNet-866),
well above training the same number of randomly chosen other parameters. The two setups here:

- `bn_only(model)`: every gamma (`weight`) and beta (`bias`) of every batch norm layer.
- `random_subset(model, count, generator)`: `count` scalars drawn uniformly without
  replacement from all the non-BN parameters' elements (the matched control; Frankle et al.'s
  own control drew 2 per channel, this one draws from the whole network).

`freeze_to(model, subset)` makes exactly those scalars trainable: tensors outside the subset
get `requires_grad=False` (no gradient is even computed for them), a tensor trained only in
part gets a gradient hook that zeroes the frozen elements' gradient. `subset_param_groups`
builds the optimizer groups so that no optimizer term moves a frozen element: weight decay is
0 for partly trained tensors (decay would shrink their frozen elements), and SGD's momentum and
Adam's moments of a zero gradient stay exactly 0, so those elements stay bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from normlab.layers.surgery import is_batchnorm

__all__ = ["TRAINABLE", "TrainableSubset", "bn_only", "bn_parameter_names", "freeze_to", "random_subset",
           "subset_param_groups", "trainable_subset"]  # fmt: skip

TRAINABLE = ("all", "bn_only", "random_matched")
"""What `trainable_subset` can select: everything, BN's gamma/beta, or as many random scalars."""


@dataclass(frozen=True)
class TrainableSubset:
    """The scalars of a model that train.

    `masks` maps a parameter name (as `model.named_parameters()`) to None (the whole tensor
    trains) or a bool mask of the parameter's shape (True: that element trains). Parameters
    not named are frozen.
    """

    masks: dict[str, Tensor | None]
    sizes: dict[str, int]  # every named parameter's numel, to count whole tensors

    @property
    def count(self) -> int:
        """How many scalars train."""
        return sum(self.sizes[n] if m is None else int(m.sum()) for n, m in self.masks.items())


def bn_parameter_names(model: nn.Module) -> list[str]:
    """Names of the affine parameters (gamma `weight`, beta `bias`) of every batch norm layer
    (torch's, normlab's and their variants) in `model`."""
    names = []
    for prefix, module in model.named_modules():
        if is_batchnorm(module):
            for name, _ in module.named_parameters(recurse=False):
                names.append(f"{prefix}.{name}" if prefix else name)
    return names


def bn_only(model: nn.Module) -> TrainableSubset:
    """Every BN gamma and beta trains, nothing else (Frankle et al. 2021)."""
    names = bn_parameter_names(model)
    if not names:
        raise ValueError(
            "bn_only found no batch norm layer with affine parameters in the model; "
            "build it with norm='batch' (affine=True)"
        )
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    return TrainableSubset({n: None for n in names}, sizes)


def random_subset(model: nn.Module, count: int, generator: torch.Generator) -> TrainableSubset:
    """`count` scalars drawn uniformly without replacement from every element of every non-BN
    parameter (Linear/Conv weights and biases), with `generator` (a CPU torch.Generator)."""
    bn = set(bn_parameter_names(model))
    named = [(n, p) for n, p in model.named_parameters() if n not in bn]
    total = sum(p.numel() for _, p in named)
    if not 0 < count <= total:
        raise ValueError(
            f"random_subset needs 0 < count <= {total} (the non-BN parameters' elements), got count={count}"
        )
    chosen = torch.zeros(total, dtype=torch.bool)
    chosen[torch.randperm(total, generator=generator)[:count]] = True  # flat over all tensors
    masks, start = {}, 0
    for name, p in named:
        mask = chosen[start : start + p.numel()].view(p.shape)
        start += p.numel()
        if mask.any():
            masks[name] = None if mask.all() else mask.to(p.device)
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    return TrainableSubset(masks, sizes)


def freeze_to(model: nn.Module, subset: TrainableSubset) -> list[RemovableHandle]:
    """Make exactly `subset` trainable: `requires_grad` off for every other parameter, and for a
    partly trained tensor a hook that multiplies its gradient by the mask.

    Returns the hooks' handles (`handle.remove()` undoes the masking; requires_grad stays).
    """
    handles = []
    for name, p in model.named_parameters():
        p.requires_grad_(name in subset.masks)
        mask = subset.masks.get(name)
        if mask is not None:
            handles.append(p.register_hook(_masker(mask.to(p.device))))
    return handles


def _masker(mask: Tensor):
    def hook(grad: Tensor) -> Tensor:
        return grad * mask  # frozen elements: gradient exactly 0

    return hook


def subset_param_groups(model: nn.Module, subset: TrainableSubset, weight_decay: float) -> list[dict]:
    """Optimizer param groups for `subset` (after `freeze_to`): whole tensors with
    `weight_decay`, partly trained tensors with weight decay 0 (so nothing moves their frozen
    elements). The groups hold exactly the trainable parameters, so
    `normlab.train.check_optimizer_owns_model` accepts an optimizer built from them.
    """
    whole = [p for n, p in model.named_parameters() if n in subset.masks and subset.masks[n] is None]
    part = [p for n, p in model.named_parameters() if subset.masks.get(n) is not None]
    groups = [{"params": whole, "weight_decay": weight_decay}, {"params": part, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def trainable_subset(model: nn.Module, which: str, seed: int) -> TrainableSubset | None:
    """The subset a run trains, by name: "all" (None: train normally), "bn_only", or
    "random_matched" (as many random non-BN scalars as the model has BN parameters, drawn with
    a generator seeded by `seed`).

    Example (in a training loop, before building the optimizer):
        >>> subset = trainable_subset(model, "bn_only", seed=0)
        >>> freeze_to(model, subset)
        >>> opt = torch.optim.Adam(subset_param_groups(model, subset, weight_decay=0.0), lr=1e-3)
    """
    if which == "all":
        return None
    if which == "bn_only":
        return bn_only(model)
    if which == "random_matched":
        return random_subset(model, bn_only(model).count, torch.Generator().manual_seed(seed))
    raise ValueError(f"trainable: expected one of {', '.join(TRAINABLE)}, got {which!r}")
