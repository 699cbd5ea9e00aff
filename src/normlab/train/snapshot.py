"""Measure a model without changing it: every parameter and buffer restored bit for bit.

The mechanism probes (ICS, loss landscape, BN inspection) run extra forward passes in
training mode and move weights temporarily. A training-mode BN forward updates its running
statistics and counts the batch, so without this each probe would perturb the run it measures.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, change `model`'s parameters and buffers freely; on exit (also on an
    exception) each is copied back from a clone taken on entry, in place (so optimizers and
    hooks that hold the tensors still see them), together with every module's train/eval mode.

    Gradients (`.grad`) are restored too: a probe's backward passes accumulate into them.

    Example:
        >>> with preserved(model):
        ...     model(x).sum().backward()   # BN running stats, .grad: restored afterwards
    """
    params = list(model.parameters())
    buffers = [b for b in model.buffers() if b is not None]
    with torch.no_grad():
        saved = [t.detach().clone() for t in (*params, *buffers)]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        with torch.no_grad():
            for tensor, value in zip((*params, *buffers), saved):
                tensor.copy_(value)
        for p, g in zip(params, grads):
            p.grad = g
        for module, training in modes:
            module.training = training
