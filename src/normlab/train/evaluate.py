"""Evaluation passes: eval-mode accuracy/loss, and train-mode accuracy (batch statistics)
without disturbing the running statistics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normlab.train.parallel import ProcessContext


@torch.no_grad()
def accuracy_and_loss(model: nn.Module, loader) -> tuple[float, float]:
    """(accuracy 0..1, mean cross-entropy in nats) of `model` in eval mode over `loader`."""
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0  # the sums become device tensors: one sync at the end
    for x, y in loader:
        logits = model(x).float()  # (B, classes)
        loss_sum = loss_sum + F.cross_entropy(logits, y, reduction="sum")
        correct = correct + (logits.argmax(1) == y).sum()
        count += len(y)
    if count == 0:
        return float("nan"), float("nan")
    return float(correct) / count, float(loss_sum) / count


@torch.no_grad()
def train_mode_accuracy(model: nn.Module, loader, ctx: ProcessContext | None = None) -> float:
    """Accuracy in train mode (norms use the statistics of each batch), as the model sees
    data while training. Every buffer (BN running mean/var, counters) is restored afterwards,
    so this measurement leaves no trace. Distributed: each process takes its shard of every
    batch, like training, and the counts are summed.
    """
    ctx = ctx or ProcessContext()
    buffers = list(model.buffers())
    saved = [b.clone() for b in buffers]
    model.train()
    correct = torch.zeros((), dtype=torch.long)
    count = torch.zeros((), dtype=torch.long)
    try:
        for x, y in loader:
            x, y = ctx.shard(x), ctx.shard(y)
            logits = model(x)
            correct += (logits.argmax(1) == y).sum().cpu()
            count += len(y)
    finally:
        for b, s in zip(buffers, saved):
            b.copy_(s)
    totals = torch.stack([correct, count])
    if ctx.distributed:
        device = next(model.parameters()).device  # NCCL reduces GPU tensors only
        totals = ctx.all_sum(totals.to(device)).cpu()
    return float(totals[0]) / max(int(totals[1]), 1)
