"""The engine's side of data parallelism: detect the process group, shard global batches,
wrap the model. The launcher that starts the processes is `normlab.train.distributed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from normlab.layers.sync import convert_sync_batchnorm


@dataclass(frozen=True)
class ProcessContext:
    """Where this process sits: rank and world size (1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def detect(cls) -> ProcessContext:
        """The initialized default process group, or a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def per_process(self, global_batch: int) -> int:
        """Samples per process for a global batch; it must split evenly."""
        if global_batch % self.world_size:
            raise ValueError(
                f"batch_size={global_batch} is the global batch and must be divisible by the "
                f"{self.world_size} processes; use a multiple of {self.world_size}"
            )
        return global_batch // self.world_size

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch: (B, ...) -> (B / world, ...)."""
        if not self.distributed:
            return x
        per = self.per_process(x.shape[0])  # an uneven batch is an error, not a silent drop
        return x[self.rank * per : (self.rank + 1) * per]

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over processes (in place; identity when single-process)."""
        if self.distributed:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def any_process(self, flag: bool, device: torch.device) -> bool:
        """True when `flag` is True in any process, so that every process decides alike."""
        if not self.distributed:
            return flag
        return bool(self.all_sum(torch.tensor(float(flag), device=device)) > 0)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def prepare_model(model: nn.Module, ctx: ProcessContext, sync_bn: bool) -> nn.Module:
    """Convert BN to SyncBatchNorm when asked and distributed (before the optimizer is built:
    conversion replaces the norm modules and so their parameters)."""
    if ctx.distributed and sync_bn:
        model = convert_sync_batchnorm(model)
    return model


def wrap_ddp(model: nn.Module, ctx: ProcessContext, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `model` when distributed; the model itself otherwise."""
    if not ctx.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
