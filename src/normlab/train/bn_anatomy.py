r"""The batch norm computation, shown on a real layer of a trained network.

Training-mode BN of an input x of shape (N, C, *) (Ioffe & Szegedy 2015, Algorithm 1), per
channel c over the M = N * prod(*) values of that channel:

.. math::
    \mu_c = \frac1M \sum x, \quad \sigma^2_c = \frac1M \sum (x - \mu_c)^2 \text{ (biased)}, \quad
    \hat x = \frac{x - \mu_c}{\sqrt{\sigma^2_c + \epsilon}}, \quad y = \gamma_c \hat x + \beta_c

and the running statistics move toward (mu, unbiased sigma^2) by `momentum`. Choosing
:math:`\gamma_c = \sqrt{\sigma^2_c + \epsilon}` and :math:`\beta_c = \mu_c` gives back
:math:`y = x`: the affine step can undo the normalization, so BN loses no representational
power (the paper's Sec. 3). `recovers_input` checks that identity numerically on a layer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from normlab.layers import BatchNorm, BatchNormBase
from normlab.layers.surgery import is_batchnorm
from normlab.train.snapshot import preserved

__all__ = ["BNSnapshot", "bn_by_hand", "capture_bn", "histogram", "recovers_input"]


def bn_by_hand(
    x: Tensor, eps: float, gamma: Tensor | None = None, beta: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Training-mode BN written out in float64: (y like x, mean (C,), biased var (C,))."""
    x = x.double()
    dims = [0, *range(2, x.dim())]  # every dim but C
    shape = [1, x.shape[1]] + [1] * (x.dim() - 2)  # broadcasts a (C,) vector against x
    mean = x.mean(dims)
    var = ((x - mean.view(shape)) ** 2).mean(dims)
    y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)
    if gamma is not None:
        y = y * gamma.double().view(shape)
    if beta is not None:
        y = y + beta.double().view(shape)
    return y, mean, var


@dataclass(frozen=True)
class BNSnapshot:
    """What one BN layer received and produced on one batch (tensors on the CPU, detached).

    Attributes:
        name: the layer's name in the model.
        training: whether the layer normalized with the batch statistics (else the running ones).
        input, output: (N, C, *), the layer's pre-BN and post-BN activations.
        batch_mean, batch_var: (C,) the input's per-channel mean and biased variance (float64).
        gamma, beta: (C,) the learned affine parameters (None without affine).
        running_mean, running_var: (C,) the running statistics (None when not tracked).
        eps: the layer's eps.
    """

    name: str
    training: bool
    input: Tensor
    output: Tensor
    batch_mean: Tensor
    batch_var: Tensor
    gamma: Tensor | None
    beta: Tensor | None
    running_mean: Tensor | None
    running_var: Tensor | None
    eps: float


def _cpu(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().cpu().clone()


def capture_bn(model: nn.Module, x: Tensor, name: str) -> BNSnapshot:
    """Run `model(x)` in its current mode and record the BN layer `name` (a name from
    `model.named_modules()`). The model is left exactly as it was (running statistics too).
    """
    modules = dict(model.named_modules())
    layer = modules.get(name)
    if layer is None or not is_batchnorm(layer):
        bns = [n for n, m in modules.items() if is_batchnorm(m)]
        raise ValueError(
            f"capture_bn needs the name of a batch norm layer, got {name!r}; this "
            f"model's are: {', '.join(bns) if bns else 'none'}"
        )
    seen: dict[str, Tensor] = {}

    def hook(module: nn.Module, args: tuple, out: Tensor) -> None:
        seen["input"], seen["output"] = args[0].detach().cpu().clone(), out.detach().cpu().clone()

    with preserved(model), torch.no_grad():
        handle = layer.register_forward_hook(hook)
        try:
            model(x)
        finally:
            handle.remove()
        training = layer.training
        state = (layer.weight, layer.bias, layer.running_mean, layer.running_var)
        gamma, beta, running_mean, running_var = (_cpu(t) for t in state)
    _, mean, var = bn_by_hand(seen["input"], layer.eps)
    return BNSnapshot(name, training, seen["input"], seen["output"], mean, var, gamma, beta,
                      running_mean, running_var, float(layer.eps))  # fmt: skip


def _plain_training(layer: nn.Module) -> bool:
    """True when the layer's training-mode forward is plain BN (torch's, or normlab's without
    an overridden training computation)."""
    if not isinstance(layer, BatchNormBase):
        return True
    return (
        type(layer).forward_train is BatchNormBase.forward_train
        and type(layer).batch_stats is BatchNormBase.batch_stats
    )


def recovers_input(layer: nn.Module, x: Tensor) -> float:
    """max |BN(x) - x| for BN with gamma = sqrt(var + eps), beta = mean (the batch's own
    statistics), computed by a float64 copy of `layer` in training mode (a fresh BatchNorm with
    the same eps when `layer` has no affine parameters, or when its training computation is not
    plain BN: Ghost BN, Batch Renorm, noisy BN). About 1e-15 times the input's scale.
    """
    if not is_batchnorm(layer):
        raise ValueError(f"recovers_input needs a batch norm layer, got {type(layer).__name__}")
    x = x.detach().double()
    _, mean, var = bn_by_hand(x, layer.eps)
    if layer.weight is not None and layer.bias is not None and _plain_training(layer):
        bn = copy.deepcopy(layer).to(device=x.device, dtype=torch.float64).train()
        if getattr(bn, "frozen", False):  # a frozen layer would use its running statistics
            bn.unfreeze()
    else:
        bn = BatchNorm(x.shape[1], eps=layer.eps, device=x.device, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(torch.sqrt(var + layer.eps))
        bn.bias.copy_(mean)
        return float((bn(x) - x).abs().max())


def histogram(values: Tensor, bins: int = 40, lo: float | None = None,
              hi: float | None = None) -> tuple[list[int], list[float]]:  # fmt: skip
    """Counts (bins,) and edges (bins + 1,) of all of `values`, over [lo, hi] (default their
    min and max), as plain lists for a store or a JSON report."""
    v = values.detach().double().flatten().cpu()
    lo = float(v.min()) if lo is None else lo
    hi = float(v.max()) if hi is None else hi
    if hi <= lo:
        hi = lo + 1.0
    counts = torch.histc(v, bins=bins, min=lo, max=hi)
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    return [int(c) for c in counts.tolist()], edges.tolist()
