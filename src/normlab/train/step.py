"""The training step the loop calls: `step = make_step(config, run, ctx)`.

Eager or graphed, a step has one interface: `step.batches()` yields one epoch of its inputs
and `loss = step(batch, grad_norms)` trains on one of them (forward, loss, backward, clipping,
optimizer) and returns the loss as a 0-d device tensor, read by nobody on the host.

- eager: the inputs are the loader's global batches (x, y); each process trains on its
  contiguous shard of them.
- graphed (`cuda_graph`): the inputs are the loader's (sample indices, augmentation
  parameters); the captured step gathers and normalizes its batch itself, so per step the
  host copies two small tensors and launches one CUDA graph (see `normlab.train.graphed`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from normlab.data import BatchLoader
from normlab.train.build import Built
from normlab.train.config import RunConfig
from normlab.train.graphed import GraphedStep
from normlab.train.parallel import ProcessContext
from normlab.train.probes import grad_norms as measure_grad_norms

Update = Callable[[torch.Tensor, torch.Tensor, "dict[str, float] | None"], torch.Tensor]
"""`update(x, y, grad_norms) -> loss`: one optimizer step on this process's batch."""


class Step(Protocol):
    def batches(self) -> Iterator[Any]:
        """One epoch of this step's inputs."""

    def __call__(self, batch: Any, grad_norms: dict[str, float] | None = None) -> torch.Tensor:
        """Train on `batch`; `grad_norms`, when given, receives the per-layer gradient norms
        before clipping (eager steps only). Returns the loss, detached, 0-d."""


def make_update(config: RunConfig, run: Built) -> Update:
    """Forward, loss, backward, (clip), optimizer step. x: (B / world, ...), y: (B / world,).
    Reads nothing on the host, so that `GraphedStep` can capture it."""
    params = [p for p in run.model.parameters() if p.requires_grad]
    smoothing, clip = config.optim.label_smoothing, config.optim.grad_clip

    def update(x: torch.Tensor, y: torch.Tensor, grad_norms: dict[str, float] | None = None) -> torch.Tensor:
        with run.autocast():
            logits = run.train_model(x)  # (B / world, classes)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_norms is not None:
            grad_norms.update(measure_grad_norms(run.model))
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        run.optimizer.step()
        return loss.detach()

    return update


class EagerStep:
    """Global batches (x, y) from the loader; this process trains on its shard of each."""

    def __init__(self, update: Update, loader: BatchLoader, ctx: ProcessContext) -> None:
        self.update, self.loader, self.ctx = update, loader, ctx

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.loader)

    def __call__(
        self, batch: tuple[torch.Tensor, torch.Tensor], grad_norms: dict[str, float] | None = None
    ) -> torch.Tensor:
        x, y = (self.ctx.shard(t) for t in batch)  # (B / world, ...), (B / world,)
        return self.update(x, y, grad_norms)


class LoaderGraphedStep:
    """(sample indices, augmentation parameters) from the loader; the step, batch gathering
    included, is replayed as one CUDA graph after `graphed.WARMUP_STEPS` eager steps."""

    def __init__(self, update: Update, loader: BatchLoader) -> None:
        self.loader = loader
        self.graphed = GraphedStep(lambda idx, aug: update(*loader.make_batch(idx, aug)))

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        return self.loader.index_batches()

    def __call__(
        self, batch: tuple[torch.Tensor, torch.Tensor | None], grad_norms: dict[str, float] | None = None
    ) -> torch.Tensor:
        # never asked for grad_norms: RunConfig refuses cuda_graph with the gradient probe
        return self.graphed(*batch)


def make_step(config: RunConfig, run: Built, ctx: ProcessContext) -> Step:
    """The run's step: graphed when `config.cuda_graph`, else eager (see the module docstring)."""
    update = make_update(config, run)
    if config.cuda_graph:  # single process: RunConfig refuses cuda_graph with nproc > 1
        return LoaderGraphedStep(update, run.loader)
    return EagerStep(update, run.loader, ctx)
