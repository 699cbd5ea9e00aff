"""Optimizers built from a RunConfig, and the check that an optimizer owns exactly its model.

The seed notebook's BN model scored chance because it was stepped by the *other* model's
optimizer; `check_optimizer_owns_model` makes that impossible to miss.
"""

from __future__ import annotations

import torch
from torch import nn

from normlab.train.config import RunConfig


class ForeignOptimizerError(ValueError):
    """The optimizer's parameters are not exactly the model's trainable parameters."""


def check_optimizer_owns_model(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Raise `ForeignOptimizerError` unless `optimizer` steps exactly `model`'s trainable params.

    Exactly: every parameter with ``requires_grad`` appears once in the optimizer's groups,
    and the optimizer holds nothing else (no frozen parameter, no other model's tensor).
    """
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    held_ids = [id(p) for group in optimizer.param_groups for p in group["params"]]
    held = set(held_ids)
    missing = [n for i, n in names.items() if i not in held]
    foreign = sum(1 for i in held_ids if i not in names)
    duplicated = len(held_ids) - len(held)
    if missing or foreign or duplicated:
        raise ForeignOptimizerError(
            f"the optimizer must update exactly the model's {len(names)} trainable parameters, "
            f"but it misses {len(missing)} ({', '.join(missing[:5])}{'...' if len(missing) > 5 else ''}), "
            f"holds {foreign} tensors that are not the model's trainable parameters and "
            f"{duplicated} duplicates; build the optimizer from this model's parameters "
            f"(normlab.train.build_optimizer(model, config))"
        )


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict]:
    """Two groups: weights of Linear/Conv decay; norm gamma/beta and biases (ndim <= 1) do not.

    With `decay_norm_and_bias` (or weight_decay 0) everything is one group.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if decay_norm_and_bias or weight_decay == 0.0:
        return [{"params": [p for _, p in params], "weight_decay": weight_decay}]
    decay = [p for _, p in params if p.ndim > 1]
    no_decay = [p for _, p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, config: RunConfig, groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam (L2 weight decay) or AdamW (decoupled) for `model`.

    `groups`: the param groups to step (each with its weight_decay); default `param_groups`
    of the model's trainable parameters. A run training a subset passes its own.

    With `config.cuda_graph` the optimizer can be captured in a CUDA graph: its learning rate
    is a 0-d float32 tensor on the parameters' device (the scheduler fills it in place, so a
    replayed graph reads each step's value) and Adam/AdamW are `capturable` (their step counts
    live on the device). Same math as the plain optimizer.
    """
    o = config.optim
    if groups is None:
        groups = param_groups(model, o.weight_decay, o.decay_norm_and_bias)
    # fused: one kernel for the whole update (3x faster than the per-tensor loop on CPU for
    # the seed's MLP); same math, and deterministic
    fused = _fused_supported(model)
    lr: float | torch.Tensor = config.lr
    graph_options = {}
    if config.cuda_graph:
        lr = torch.tensor(config.lr, dtype=torch.float32, device=next(model.parameters()).device)
        graph_options = {"capturable": True}
        for group in groups:  # one tensor per group: the scheduler fills each group's own
            group["lr"] = lr.clone()
    if config.optimizer == "sgd":
        if o.nesterov and o.momentum == 0.0:
            raise ValueError(
                "optim.nesterov=true needs optim.momentum > 0, got momentum=0; set a momentum "
                "(e.g. 0.9) or nesterov=false"
            )
        # SGD has no capturable flag: fused SGD reads a tensor lr on the device as it is
        return torch.optim.SGD(groups, lr=lr, momentum=o.momentum, nesterov=o.nesterov, fused=fused)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=o.betas, fused=fused, **graph_options)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=o.betas, fused=fused, **graph_options)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; expected sgd, adam or adamw")


def _fused_supported(model: nn.Module) -> bool | None:
    """True when every parameter is a float on CPU or CUDA (torch's fused optimizers' domain)."""
    params = list(model.parameters())
    floats = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
    ok = params and all(p.device.type in ("cpu", "cuda") and p.dtype in floats for p in params)
    return True if ok else None


def lr_tensors_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move learning rates held as tensors (a `cuda_graph` run's) to `device`, in place.

    `torch.load(map_location="cpu")` brings a checkpoint's tensor lr back on the CPU, where a
    captured optimizer step cannot read it; float learning rates are left alone.
    """
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor) and group["lr"].device != device:
            group["lr"] = group["lr"].to(device)
