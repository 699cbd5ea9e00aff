"""Optional measurements during training: pre-activation statistics, grad and weight norms.

Each costs nothing when off: the activation hooks are only registered when asked for and
only compute on armed (probe) steps; norms are computed only on probe steps.
"""

from __future__ import annotations

import torch
from torch import nn

from normlab.models.blocks import ACTIVATIONS
from normlab.train import metrics as M

PRE_NORM_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""Layers whose output is probed too: the input of the norm that follows them."""


def tracked_units(num_channels: int, units: int) -> list[int]:
    """`units` channel indices spread evenly over [0, num_channels) (fixed for the run)."""
    if units >= num_channels:
        return list(range(num_channels))
    if units == 1:
        return [0]
    return sorted({round(i * (num_channels - 1) / (units - 1)) for i in range(units)})


class ActivationProbe:
    """Statistics of the input of every activation module (the pre-activation x of Ioffe &
    Szegedy Fig. 1) and of the output of every Linear/Conv layer (the input its norm receives,
    before normalization) on the training batch of an armed step.

    For a layer input of shape (N, C, *S): `act/<layer>/mean` and `/std` over all
    N * C * prod(S) elements, and the 15/50/85th percentiles of each tracked channel c over
    its N * prod(S) values (`act/<layer>/u<c>/p15` ...).

    Example:
        >>> probe = ActivationProbe(model, units=3)
        >>> probe.armed = True; model(x); stats = probe.collect()   # dict[str, float]
    """

    def __init__(self, model: nn.Module, units: int) -> None:
        self.units = units
        self.armed = False
        self._pending: dict[str, torch.Tensor] = {}
        self._handles = []
        act_types = tuple(ACTIVATIONS.values())
        for name, module in model.named_modules():
            if isinstance(module, act_types):
                self._handles.append(module.register_forward_pre_hook(self._hook(name)))
            elif isinstance(module, PRE_NORM_TYPES):
                # after BN the input of the nonlinearity is normalized by construction; what
                # shifts (or not) over training is what the norm receives: this layer's output
                self._handles.append(module.register_forward_hook(self._output_hook(name)))

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if self.armed:
                self._record(name, args[0].detach())

        return hook

    def _output_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if self.armed:
                self._record(name, output.detach())

        return hook

    def _record(self, name: str, x: torch.Tensor) -> None:
        x = x.float()
        # (N, C, *S) -> (C, N * prod(S)): one row per channel
        per_channel = x.transpose(0, 1).reshape(x.shape[1], -1)
        idx = tracked_units(x.shape[1], self.units)
        q = torch.tensor([p / 100 for p in M.PERCENTILES], device=x.device)
        quantiles = torch.quantile(per_channel[idx], q, dim=1)  # (len(PERCENTILES), len(idx))
        self._pending[M.act_key(name, "mean")] = x.mean()
        self._pending[M.act_key(name, "std")] = x.std(unbiased=False)
        for j, unit in enumerate(idx):
            for i, p in enumerate(M.PERCENTILES):
                self._pending[M.act_unit_key(name, unit, p)] = quantiles[i, j]

    def collect(self) -> dict[str, float]:
        """The values recorded since the last collect, as floats (one device sync); disarms."""
        values = {k: float(v) for k, v in self._pending.items()}
        self._pending.clear()
        self.armed = False
        return values

    def remove(self) -> None:
        """Unregister the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def grad_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of each parameter's gradient (`grad_norm/<param>`) and of all (`grad_norm`)."""
    named = [(n, p.grad.detach()) for n, p in model.named_parameters() if p.grad is not None]
    if not named:
        return {}
    norms = torch.stack([g.float().norm() for _, g in named])
    values = {M.grad_norm_key(n): v for (n, _), v in zip(named, norms.tolist())}
    values[M.GRAD_NORM] = float(norms.norm())
    return values


def weight_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of every trainable parameter (`weight_norm/<param>`)."""
    named = [(n, p.detach()) for n, p in model.named_parameters() if p.requires_grad]
    norms = torch.stack([p.float().norm() for _, p in named]).tolist()
    return {M.weight_norm_key(n): v for (n, _), v in zip(named, norms)}
