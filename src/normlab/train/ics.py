r"""Internal covariate shift as Santurkar et al. 2018 measure it (Sec. 2.2, Definition 2.1).

ICS of layer k at step t is how much layer k's gradient changes when the layers before it
take their step first, on the same batch (x, y):

.. math::
    G_k = \nabla_{W_k} L(W_1, \dots, W_K; x, y), \qquad
    G'_k = \nabla_{W_k} L(W_1 + \Delta_1, \dots, W_{k-1} + \Delta_{k-1}, W_k, \dots, W_K; x, y)

reported as :math:`\|G_k - G'_k\|_2` and :math:`\cos(G_k, G'_k)`, where :math:`\Delta_j` is
layer j's update at step t (:math:`-\eta G_j` for SGD). A large difference means the layers
before k moved k's optimization problem under it: the "shift" BN was said to reduce.
Santurkar et al. found it is not reduced by BN (their Fig. 3: with BN, the l2 difference is
as large or larger and the cosine as small or smaller).

One measurement costs K + 1 forward/backward passes on the batch; the model is left exactly
as it was (`preserved`). The forward must be deterministic for fixed weights (a noisy BN's
noise held, dropout off), or the noise itself shows up as shift.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from normlab.train.snapshot import preserved

__all__ = ["LayerICS", "internal_covariate_shift", "layer_parameters", "optimizer_deltas"]

LossFn = Callable[[nn.Module], Tensor]
"""loss_fn(model) -> scalar loss of `model` on the one fixed batch being measured."""

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class LayerICS:
    """One layer's ICS at one step: `l2` = ||G - G'||_2, `cosine` = cos(G, G') (nan when a
    gradient is zero), `grad_norm` = ||G||_2 (so l2 can be read relative to it)."""

    l2: float
    cosine: float
    grad_norm: float


def layer_parameters(model: nn.Module) -> list[list[nn.Parameter]]:
    """The trainable parameters (weight, bias) of each Linear/Conv layer of `model`, in module
    registration order, which for normlab's models is the forward order (input to output)."""
    layers = []
    for module in model.modules():
        if isinstance(module, _WEIGHTED):
            params = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if params:
                layers.append(params)
    return layers


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def internal_covariate_shift(
    model: nn.Module,
    loss_fn: LossFn,
    layers: Sequence[Sequence[nn.Parameter]] | None = None,
    *,
    lr: float | None = None,
    deltas: Sequence[Sequence[Tensor]] | None = None,
) -> list[LayerICS]:
    """ICS of every layer at the model's current weights (Santurkar et al. 2018, Def. 2.1).

    Args:
        model: the network, in the mode it trains in (training mode, for BN's batch statistics).
        loss_fn: `loss_fn(model)` -> the scalar loss on the batch (x, y) of this step.
        layers: K layers in forward order, each a list of its parameters (W_k, b_k);
            default `layer_parameters(model)`.
        lr: the step is SGD's, Delta_j = -lr * G_j (give this or `deltas`).
        deltas: the step taken by any optimizer, one tensor per parameter of `layers`, same
            shapes (see `optimizer_deltas`).

    Returns:
        K `LayerICS`, one per layer; layer 1 has no layer before it, so its l2 is 0 and its
        cosine 1 by definition (G'_1 = G_1; not recomputed).

    The model's parameters, buffers (BN running statistics), gradients and modes are restored
    exactly afterwards.
    """
    if (lr is None) == (deltas is None):
        raise ValueError("internal_covariate_shift needs exactly one of lr= (SGD) or deltas=")
    layers = [list(layer) for layer in (layer_parameters(model) if layers is None else layers)]
    if not layers:
        raise ValueError("internal_covariate_shift found no Linear/Conv layer; pass layers=")
    params = [p for layer in layers for p in layer]
    with preserved(model):
        grads = torch.autograd.grad(loss_fn(model), params)  # G_j for every parameter
        if deltas is None:
            step = [-lr * g for g in grads]
        else:
            step = [d for layer in deltas for d in layer]
            if [d.shape for d in step] != [p.shape for p in params]:
                raise ValueError("deltas must hold one tensor per parameter of layers, same shapes")
        results = []
        start = 0
        for k, layer in enumerate(layers):
            g = _flat(grads[start : start + len(layer)])  # G_k, flattened (numel_k,)
            if k == 0:
                results.append(LayerICS(0.0, 1.0, float(g.norm())))
            else:
                g_after = _flat(torch.autograd.grad(loss_fn(model), layer))  # G'_k
                results.append(_compare(g, g_after))
            with torch.no_grad():  # layer k takes its step before layer k + 1 is measured
                for p, d in zip(layer, step[start : start + len(layer)]):
                    p.add_(d)
            start += len(layer)
    return results


def _compare(g: Tensor, g_after: Tensor) -> LayerICS:
    norm, norm_after = g.norm(), g_after.norm()
    denom = norm * norm_after
    cosine = float(g @ g_after / denom) if float(denom) > 0 else float("nan")
    return LayerICS(float((g - g_after).norm()), cosine, float(norm))


def optimizer_deltas(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    layers: Sequence[Sequence[nn.Parameter]] | None = None,
) -> list[list[Tensor]]:
    """The update `optimizer` would make at this step (W_{t+1} - W_t for each parameter of
    `layers`), found by taking the step and undoing it: the model and the optimizer's state
    (Adam's moments, momentum buffers, step counts) are left as they were.

    For `internal_covariate_shift(..., deltas=)` when training with Adam or momentum SGD.
    """
    layers = [list(layer) for layer in (layer_parameters(model) if layers is None else layers)]
    state = copy.deepcopy(optimizer.state_dict())
    with preserved(model):
        before = [[p.detach().clone() for p in layer] for layer in layers]
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model).backward()
        optimizer.step()
        out = [[p.detach() - b for p, b in zip(layer, old)] for layer, old in zip(layers, before)]
    optimizer.load_state_dict(state)
    return out
