r"""Loss-landscape smoothness along the gradient, as Santurkar et al. 2018 measure it (Sec. 3.1,
Fig. 4): at the current weights W with loss gradient g, step to W - eta g for a range of step
sizes eta and record

- the loss there, :math:`L(W - \eta g)`: its variation over the range ("loss landscape",
  Fig. 4a; a smooth landscape varies little and predictably);
- the gradient predictiveness, :math:`\|\nabla L(W) - \nabla L(W - \eta g)\|_2` (Fig. 4b; small
  means the gradient at W still describes the loss further along);
- the effective beta-smoothness, :math:`\max_\eta \|\nabla L(W) - \nabla L(W - \eta g)\|_2 /
  \|\eta g\|_2` (Fig. 4c): the largest rate at which the gradient changes per unit distance
  moved along g, a local Lipschitz constant of the gradient in that direction.

For a quadratic :math:`L = \tfrac12 w^\top A w` all three are exact: the gradient change is
:math:`\eta \|A g\|` and the smoothness :math:`\|A g\| / \|g\|`, the top eigenvalue of A when g
is its eigenvector. Santurkar et al. found all three smaller and steadier with BN.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from normlab.train.snapshot import preserved

__all__ = ["LandscapeProbe", "landscape_probe"]


@dataclass(frozen=True)
class LandscapeProbe:
    """One probe at one point of training.

    Attributes:
        step_sizes: eta_i, as given (>0).
        losses: L(W - eta_i g), one per step size.
        grad_changes: ||grad L(W) - grad L(W - eta_i g)||_2, one per step size.
        loss: L(W), where the probe started.
        grad_norm: ||g||_2.
    """

    step_sizes: tuple[float, ...]
    losses: tuple[float, ...]
    grad_changes: tuple[float, ...]
    loss: float
    grad_norm: float

    @property
    def loss_range(self) -> float:
        """max - min of the loss over the step sizes (the width of Fig. 4a's band)."""
        return max(self.losses) - min(self.losses)

    @property
    def max_grad_change(self) -> float:
        """The largest l2 change of the gradient over the step sizes (Fig. 4b's band top)."""
        return max(self.grad_changes)

    @property
    def beta_smoothness(self) -> float:
        """max_i ||grad change_i|| / (eta_i ||g||): effective beta-smoothness (Fig. 4c);
        nan when g = 0 (no direction to move in)."""
        if self.grad_norm == 0:
            return float("nan")
        return max(c / (eta * self.grad_norm) for c, eta in zip(self.grad_changes, self.step_sizes))


def landscape_probe(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], Tensor],
    step_sizes: Sequence[float],
    params: Sequence[nn.Parameter] | None = None,
) -> LandscapeProbe:
    """Loss and gradient along the gradient direction from the model's current weights.

    Args:
        model: the network, in the mode the landscape is measured in (training mode for BN's
            batch statistics, as Santurkar et al.).
        loss_fn: `loss_fn(model)` -> the scalar loss on one fixed batch (the same batch at
            every step size; the forward must be deterministic for fixed weights).
        step_sizes: the etas (> 0), e.g. the training lr times (0.25, 0.5, 1, 2, 4).
        params: the parameters that move (g is the gradient over them); default every
            trainable parameter.

    Costs 1 + len(step_sizes) forward/backward passes. Parameters, buffers (BN running
    statistics), gradients and modes are restored exactly afterwards.
    """
    etas = tuple(float(e) for e in step_sizes)
    if not etas or not all(e > 0 for e in etas):
        raise ValueError(f"landscape_probe needs step sizes > 0, got {list(step_sizes)!r}")
    params = [p for p in model.parameters() if p.requires_grad] if params is None else list(params)
    with preserved(model):
        start = [p.detach().clone() for p in params]
        loss0 = loss_fn(model)
        grads = [g.detach() for g in torch.autograd.grad(loss0, params)]  # g, per parameter
        grad_norm = _norm(grads)
        losses, changes = [], []
        for eta in etas:
            with torch.no_grad():
                for p, w, g in zip(params, start, grads):
                    p.copy_(w - eta * g)  # W - eta g, from W each time (no drift)
            loss = loss_fn(model)
            moved = torch.autograd.grad(loss, params)
            losses.append(float(loss.detach()))
            changes.append(float(_norm([a - b for a, b in zip(grads, moved)])))
    return LandscapeProbe(etas, tuple(losses), tuple(changes), float(loss0.detach()), float(grad_norm))


def _norm(tensors: Sequence[Tensor]) -> Tensor:
    """The l2 norm of all tensors together, as one vector."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))
