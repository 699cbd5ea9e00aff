"""The mechanism probe: internal covariate shift (`normlab.train.ics`) and the loss landscape
along the gradient (`normlab.train.landscape`) at one point of a run, as stored metrics.

`measure_shift(model, optimizer, batches)` measures on *copies* of the model and the optimizer,
so the run it measures is never touched: its weights, BN running statistics, gradients,
optimizer state, noise generators and torch's global RNG are as they were. The engine calls it
every `probes.ics_every_epochs` epochs (and at step 0 and at the end); the study calls it on
finished runs. Both read the same batches (`first_batches`): training is bit-identical with
the probe on or off, and the probe's numbers depend only on the weights and optimizer state.

A noisy BN layer of the copy draws its noise afresh from its own seed, and holds it for the
whole measurement (`held_noise`): every point of a run is measured under the same noise, so
a change between points is the weights', not the noise's.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from normlab.data import BatchLoader
from normlab.layers.noisy import NoisyBatchNorm, held_noise
from normlab.train import metrics as M
from normlab.train.ics import internal_covariate_shift, optimizer_deltas
from normlab.train.landscape import landscape_probe

__all__ = ["copy_run", "first_batches", "measure_shift"]

Batch = tuple[torch.Tensor, torch.Tensor]


def first_batches(loader: BatchLoader, n: int = M.ICS_PROBE_BATCHES) -> list[Batch]:
    """The first `n` batches of the loader's first epoch (fewer when an epoch has fewer); the
    loader's position is put back, so the batches it yields next are unchanged."""
    saved = loader.state_dict()
    loader.load_state_dict({**saved, "epoch": 0, "batch": 0})
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == n:
            break
    loader.load_state_dict(saved)
    return batches


def copy_run(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Independent copies of `model` and of `optimizer` over the copy's parameters, with the
    same hyper-parameters per group and a deep copy of its state (Adam's moments, step counts).
    Noisy BN layers of the copy have no generator and no noise yet: they draw from their seed."""
    noisy = [m for m in model.modules() if isinstance(m, NoisyBatchNorm)]
    # deepcopy's memo maps each noise generator to None: the copy never shares or advances it
    memo: dict[int, Any] = {id(m.generator): None for m in noisy if m.generator is not None}
    twin = copy.deepcopy(model, memo)
    for m in twin.modules():
        if isinstance(m, NoisyBatchNorm):
            m.generator, m.last_noise = None, None
    twin_of = {id(p): q for p, q in zip(model.parameters(), twin.parameters())}
    groups = [
        {**{k: v for k, v in g.items() if k != "params"}, "params": [twin_of[id(p)] for p in g["params"]]}
        for g in optimizer.param_groups
    ]
    twin_opt = type(optimizer)(groups)
    # a deep copy: load_state_dict keeps tensors that already match, which would share them
    twin_opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    return twin, twin_opt


def measure_shift(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list[Batch]) -> dict[str, float]:
    """ICS of layers 2..K with the step `optimizer` would take (`ics/<k>/l2`, `ics/<k>/cos`) and
    the landscape along the gradient at `M.LANDSCAPE_STEP_SIZES` (`landscape/...`), each the
    mean over `batches` ((x (B, ...), y (B,)) each), measured in training mode on copies of
    `model` and `optimizer` (`copy_run`); neither is changed, nor is torch's global RNG."""
    if not batches:
        raise ValueError("measure_shift needs at least one training batch, got none")
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices):
        twin, twin_opt = copy_run(model, optimizer)
        twin.train()
        sums: dict[str, float] = {}
        with held_noise(twin):
            for x, y in batches:

                def loss_fn(m: nn.Module, x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                    return F.cross_entropy(m(x), y)

                deltas = optimizer_deltas(twin, twin_opt, loss_fn)
                layers = internal_covariate_shift(twin, loss_fn, deltas=deltas)
                land = landscape_probe(twin, loss_fn, M.LANDSCAPE_STEP_SIZES)
                values = {
                    M.LANDSCAPE_LOSS_RANGE: land.loss_range,
                    M.LANDSCAPE_GRAD_CHANGE: land.max_grad_change,
                    M.LANDSCAPE_BETA: land.beta_smoothness,
                }
                for k, res in enumerate(layers[1:], start=2):  # layer 1 has no layer before it
                    values[M.ics_key(k, "l2")] = res.l2
                    values[M.ics_key(k, "cos")] = res.cosine
                for key, value in values.items():
                    sums[key] = sums.get(key, 0.0) + value / len(batches)
    return sums
