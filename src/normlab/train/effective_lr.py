r"""Weight norms and the effective learning rate of scale-invariant weights (van Laarhoven 2017;
Zhang et al. 2019, "Three mechanisms of weight decay regularization").

A weight W followed by batch norm is scale-invariant: BN(c W x) = BN(W x) for any c > 0 (up
to eps), so the loss does not depend on ||W||, only on its direction. Two consequences:

- the gradient is orthogonal to W and scales as 1/||W||: :math:`\nabla_{cW} L = \nabla_W L / c`;
- an SGD step of size lr turns W's *direction* by about lr ||g|| / ||W||, i.e. the step in
  the invariant (unit-norm) coordinates has the effective learning rate

.. math::
    \eta_\text{eff} = \frac{\eta}{\|W\|_2^2}.

Without weight decay, ||W|| only grows (each orthogonal step adds :math:`\eta^2 \|g\|^2` to
:math:`\|W\|^2`), so the effective lr decays; weight decay shrinks ||W|| by (1 - eta lambda) per
step and keeps the effective lr up. That is how weight decay acts in BN networks: through
the effective lr, not as a capacity penalty. (For SGD; Adam's update does not scale with the
gradient's size, so there the effective step is about lr / ||W||.)

||W|| here is the whole layer's Frobenius norm (BN makes each output row invariant on its own;
the layer norm is what van Laarhoven track).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from normlab.layers.surgery import is_batchnorm

__all__ = ["EffectiveLR", "effective_lrs", "scale_invariant_weights"]

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def scale_invariant_weights(model: nn.Module, is_norm: Callable[[nn.Module], bool] = is_batchnorm) -> list[str]:
    """Names of the Linear/Conv weights that a norm directly follows, i.e. whose module's next
    sibling (in registration order, within the same parent) satisfies `is_norm` (default: batch
    norm). That is how normlab's models (and torchvision's) place a norm; a norm applied
    elsewhere is not found, so pass explicit names to `effective_lrs` then.
    """
    names = []
    for prefix, parent in model.named_modules():
        children = list(parent.named_children())
        for (name, module), (_, after) in itertools.pairwise(children):
            if isinstance(module, _WEIGHTED) and is_norm(after):
                names.append(f"{prefix}.{name}.weight" if prefix else f"{name}.weight")
    return names


@dataclass(frozen=True)
class EffectiveLR:
    """One weight at one moment: `weight_norm` = ||W||_2 (Frobenius), `effective_lr` = lr / ||W||^2."""

    weight_norm: float
    effective_lr: float


def effective_lrs(model: nn.Module, lr: float, names: list[str] | None = None) -> dict[str, EffectiveLR]:
    """||W|| and lr / ||W||^2 for each weight in `names` (default `scale_invariant_weights`).

    Args:
        model: the network.
        lr: the learning rate the optimizer applies to these weights now (per step).
        names: parameter names as in `model.named_parameters()`.

    Returns:
        {name: EffectiveLR}, in the order of `names`. Norms are computed in float64 on the
        weights' device (one sync for all).
    """
    params = dict(model.named_parameters())
    names = scale_invariant_weights(model) if names is None else names
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"effective_lrs: no parameter named {', '.join(missing)}; the model has {', '.join(params)}")
    if not names:
        return {}
    with torch.no_grad():
        norms = torch.stack([params[n].detach().double().norm() for n in names]).tolist()
    return {n: EffectiveLR(w, lr / w**2 if w > 0 else float("inf")) for n, w in zip(names, norms)}
