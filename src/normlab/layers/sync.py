"""SyncBatchNorm: batch normalization whose statistics span every process of a group.

When a global batch is split across processes (data parallelism), plain BN normalizes each
process's slice with that slice's statistics: the BN batch shrinks to the per-process batch.
`SyncBatchNorm` combines the per-process statistics so every process normalizes with the
statistics of the whole global batch, exactly as one BatchNorm on the concatenated batch would.

Unlike `torch.nn.SyncBatchNorm` (CUDA/NCCL only), it uses plain `torch.distributed`
collectives, so it runs on CPU with gloo and on GPU with NCCL.

Also here: `convert_sync_batchnorm(model)` (every BN -> SyncBatchNorm, state kept) and
`revert_sync_batchnorm(model)` (back, for single-process evaluation or export).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm

from normlab.layers import functional
from normlab.layers.batchnorm import (
    BatchNorm,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    BatchNormBase,
)

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm", "revert_sync_batchnorm"]


def _global_batch_stats(x: Tensor, group: Any, world_size: int) -> tuple[Tensor, Tensor, float]:
    """Mean and biased variance per channel over the inputs of all processes, and the count.

    Each process computes its count n_p, mean m_p and M2_p = sum (x - m_p)^2 (two-pass, so no
    cancellation); they are gathered and merged with Chan's parallel formula
        n = sum n_p,  mean = sum n_p m_p / n,  M2 = sum [M2_p + n_p (m_p - mean)^2],
    which stays accurate for any offset of the data and allows unequal (even zero) counts.
    Returns (mean, var) of shape (C,) in the input's stat dtype and the global count.
    """
    channels = x.shape[1]
    count = x.numel() // channels
    dtype = functional.compute_dtype(x.dtype)
    xs = x.to(dtype)
    if count > 0:
        local_var, local_mean = torch.var_mean(xs, dim=functional.reduce_dims(x), correction=0)
        local_m2 = local_var * count
    else:  # an empty shard contributes nothing
        local_mean = xs.new_zeros(channels)
        local_m2 = xs.new_zeros(channels)
    # Row `rank` of a (W, 1 + 2C) table holds (count, mean, M2); an all-reduce (sum) of the
    # otherwise-zero table gathers every row. all_reduce, unlike all_gather, works on every
    # backend and device (gloo has no CUDA all_gather); the table is C-sized, so cheap.
    # float64: counts stay exact and the merge loses nothing.
    stats = torch.zeros(world_size, 1 + 2 * channels, dtype=torch.float64, device=x.device)
    row = stats[dist.get_rank(group)]
    row[0] = count
    row[1 : 1 + channels] = local_mean
    row[1 + channels :] = local_m2
    dist.all_reduce(stats, group=group)
    counts = stats[:, :1]  # (W, 1)
    means = stats[:, 1 : 1 + channels]  # (W, C)
    m2s = stats[:, 1 + channels :]  # (W, C)
    total = float(counts.sum().item())  # the caller refuses total <= 1
    mean = (counts * means).sum(0) / max(total, 1.0)  # (C,)
    m2 = (m2s + counts * (means - mean) ** 2).sum(0)  # (C,)
    return mean.to(dtype), (m2 / max(total, 1.0)).to(dtype), total


class _SyncBatchNormFunction(torch.autograd.Function):
    """y = (x - mean) * invstd * weight + bias with global mean/invstd; backward all-reduces.

    With xhat = (x - mean) * invstd and n the GLOBAL count per channel, the input gradient is
        dx = weight * invstd * (dy - sum(dy) / n - xhat * sum(dy * xhat) / n)
    where both sums run over the whole global batch: one all-reduce of (2C,) values.
    The weight/bias gradients are the LOCAL sums (DistributedDataParallel adds the processes'
    parameter gradients, exactly as for any other parameter).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, mean, invstd, count, group):  # noqa: D102
        shape = functional.channel_shape(x)  # (1, C, 1, ...)
        y = (x.to(mean.dtype) - mean.view(shape)) * invstd.view(shape)  # xhat
        if weight is not None:
            y = y * weight.to(mean.dtype).view(shape)
        if bias is not None:
            y = y + bias.to(mean.dtype).view(shape)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.count = count
        ctx.group = group
        return y.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # noqa: D102
        x, weight, mean, invstd = ctx.saved_tensors
        dims = functional.reduce_dims(x)
        shape = functional.channel_shape(x)  # (1, C, 1, ...)
        g = grad_out.to(mean.dtype)  # (N, C, *spatial)
        xhat = (x.to(mean.dtype) - mean.view(shape)) * invstd.view(shape)
        sum_dy = g.sum(dims)  # (C,) local
        sum_dy_xhat = (g * xhat).sum(dims)  # (C,) local
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # Every process runs this backward (same graph), so the collective always pairs up.
            both = torch.cat([sum_dy, sum_dy_xhat])  # (2C,)
            dist.all_reduce(both, group=ctx.group)
            g_sum_dy, g_sum_dy_xhat = both.chunk(2)
            scale = invstd if weight is None else invstd * weight.to(mean.dtype)
            grad_x = scale.view(shape) * (
                g - g_sum_dy.view(shape) / ctx.count - xhat * g_sum_dy_xhat.view(shape) / ctx.count
            )
            grad_x = grad_x.to(x.dtype)
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = sum_dy_xhat.to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_bias = sum_dy.to(ctx.bias_dtype)
        return grad_x, grad_weight, grad_bias, None, None, None, None


class SyncBatchNorm(BatchNormBase):
    r"""Batch normalization with statistics over the whole global batch of a process group.

    In training mode, for channel c, the mean and the biased variance are taken over every
    sample (and spatial position) of every process in the group:

        mu_c = 1/n sum_{p, i} x_{p,i,c},   sigma2_c = 1/n sum_{p, i} (x_{p,i,c} - mu_c)^2,
        y = (x - mu_c) / sqrt(sigma2_c + eps) * gamma_c + beta_c,

    with n the global count. Each process contributes (count, mean, M2) and they are merged
    with Chan's parallel formula (numerically stable; counts may differ per process). Backward
    all-reduces sum(dy) and sum(dy * xhat). `running_mean`/`running_var` are updated with the
    global mean and the unbiased global variance sigma2 * n / (n - 1), so they stay identical
    on every process. Outside an initialized process group, in a group of one, in eval mode
    or when frozen, it is exactly normlab's `BatchNorm` (no collective at all).

    Every process of the group must run the training-mode forward (and backward) of each
    SyncBatchNorm the same number of times, as with any collective. Eval-mode forwards never
    communicate (as torch's), so rank 0 may evaluate alone.

    Args:
        num_features: C, the channel count (dim 1 of the input).
        eps: added to the variance for stability. Default 1e-5.
        momentum: running-stat update factor; None: cumulative average. Default 0.1.
        affine: learn gamma (weight) and beta (bias). Default True.
        track_running_stats: keep running_mean/running_var for eval mode. Default True.
        process_group: the group to synchronize over; None: the default (world) group.
        device, dtype: of the parameters and buffers.
        impl: the implementation of the single-process path (see `BatchNormBase`).
        backend (keyword-only): the deprecated name of `impl`; warns.
        bias (keyword-only): with affine, learn beta too (torch 2.13's `bias`).

    Shape:
        input (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W); output the same shape.
        N may differ per process, even be 0, as long as the group's total is >= 2.

    Example:
        >>> bn = SyncBatchNorm(16)            # in each process, after init_process_group
        >>> y = bn(torch.randn(8, 16, 4, 4))  # normalized with the statistics of all ranks
        >>> model = convert_sync_batchnorm(model)  # or convert an existing model
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Any = None,
        device: Any = None,
        dtype: torch.dtype | None = None,
        impl: str = "auto",
        *,
        bias: bool = True,
        backend: str | None = None,
    ) -> None:
        super().__init__(
            num_features,
            eps,
            momentum,
            affine,
            track_running_stats,
            device=device,
            dtype=dtype,
            bias=bias,
            impl=impl,
            backend=backend,
        )
        self.process_group = process_group

    def _world_size(self) -> int:
        if not (dist.is_available() and dist.is_initialized()):
            return 1
        return dist.get_world_size(self.process_group)

    def forward(self, x: Tensor) -> Tensor:
        """Normalize `x` (N, C, *) with global batch statistics (training) or running ones."""
        if not (self.training and self.uses_batch_stats()) or self._world_size() == 1:
            return super().forward(x)  # exactly BatchNorm
        self._check_input_dim(x)
        # Rank and channels only: a process may hold a single sample (or none); the batch-size
        # check is on the global count below.
        functional.check_batch_norm_input(x, self.num_features, training=False)
        functional.check_eps(self.eps, training=True)
        if dist.get_backend(self.process_group) == "nccl" and not x.is_cuda:
            raise ValueError(
                f"SyncBatchNorm got a {x.device} tensor in an NCCL process group; NCCL needs "
                "CUDA tensors. Move the model and data to the process's GPU, or use the gloo "
                "backend for CPU training."
            )
        mean, var, count = _global_batch_stats(x, self.process_group, self._world_size())
        if count <= 1:
            raise ValueError(
                "Expected more than 1 value per channel when training, got "
                f"{count:.0f} across all processes (local input size {tuple(x.shape)}); use a "
                "larger global batch or call model.eval()"
            )
        if self.track_running_stats:
            momentum = self._momentum_factor()  # counts this batch, as BatchNorm does
            functional.update_running_stats(self.running_mean, self.running_var, mean, var, count, momentum)
        invstd = torch.rsqrt(var + self.eps)
        return _SyncBatchNormFunction.apply(x, self.weight, self.bias, mean, invstd, count, self.process_group)


# ---------------------------------------------------------------------------------------------
# Model surgery: convert every BN to SyncBatchNorm and back.

# Exactly BN (nothing more), so SyncBatchNorm may stand in for them. Any other subclass of
# these bases has behaviour of its own (Ghost BN, Batch Renorm, user subclasses, lazy BN).
_PLAIN_BATCHNORMS = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d,
)  # fmt: skip
_BATCHNORM_BASES = (_BatchNorm, BatchNormBase)


def _factory_kwargs(module: nn.Module) -> dict[str, Any]:
    ref = module.weight if module.weight is not None else module.running_mean
    return {} if ref is None else {"device": ref.device, "dtype": ref.dtype}


def _copy_state(src: nn.Module, dst: nn.Module) -> None:
    # Share the very Parameter objects (an optimizer built before the conversion keeps
    # working) and buffers; keep train/eval mode and normlab's frozen flag.
    if src.affine:
        dst.weight = src.weight
        dst.bias = src.bias
    if src.track_running_stats and src.running_mean is not None:
        dst.running_mean = src.running_mean
        dst.running_var = src.running_var
        dst.num_batches_tracked = src.num_batches_tracked
    if hasattr(dst, "frozen"):
        dst.frozen = getattr(src, "frozen", False)
    dst.train(src.training)


def convert_sync_batchnorm(model: nn.Module, process_group: Any = None) -> nn.Module:
    """Replace every BatchNorm in `model` (torch's or normlab's) by a SyncBatchNorm, state kept.

    Parameters (the same objects), buffers, hyper-parameters, normlab's `impl` and
    `frozen`, and train/eval mode are kept; the original class is remembered so that
    `revert_sync_batchnorm` restores it. A BN with behaviour of its own (normlab's
    GhostBatchNorm or BatchRenorm, a user subclass of a BN class, a lazy BN) is refused with
    a TypeError naming the module, rather than losing that behaviour silently as
    `torch.nn.SyncBatchNorm.convert_sync_batchnorm` does. SyncBatchNorm layers are left as
    they are. Returns the model (a new module when the root itself is a BN).

    Example:
        >>> model = convert_sync_batchnorm(model).to(device)
        >>> model = torch.nn.parallel.DistributedDataParallel(model)
    """
    return _convert(model, process_group, name="")


def _convert(module: nn.Module, process_group: Any, name: str) -> nn.Module:
    if isinstance(module, SyncBatchNorm):
        return module
    if type(module) in _PLAIN_BATCHNORMS:
        impl = getattr(module, "impl", "auto")
        sync = SyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats, process_group, impl=impl,
            **_factory_kwargs(module),
        )  # fmt: skip
        _copy_state(module, sync)
        sync._reverts_to = type(module)  # a plain attribute: not in the state dict
        return sync
    if isinstance(module, _BATCHNORM_BASES):
        raise TypeError(
            f"convert_sync_batchnorm cannot convert {name or 'the model itself'} "
            f"({type(module).__name__}): it is a batch norm with behaviour of its own that "
            "SyncBatchNorm would silently drop. Expected torch.nn.BatchNorm1d/2d/3d or normlab "
            "BatchNorm/BatchNorm1d/2d/3d; replace this layer before converting, or train "
            "without sync_bn."
        )
    for child_name, child in module.named_children():
        new = _convert(child, process_group, f"{name}.{child_name}" if name else child_name)
        if new is not child:
            setattr(module, child_name, new)
    return module


def revert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Turn every SyncBatchNorm in `model` back into a single-process BatchNorm, state kept.

    A layer made by `convert_sync_batchnorm` becomes its original class again; one built as
    SyncBatchNorm directly becomes normlab's rank-agnostic `BatchNorm` (any input rank, as
    SyncBatchNorm). Parameters (the same objects), buffers, `frozen` and train/eval mode are
    kept. Returns the model (a new module when the root itself is a SyncBatchNorm).

    Example:
        >>> single = revert_sync_batchnorm(ddp_model.module)  # for evaluation or export
    """
    if isinstance(model, SyncBatchNorm):
        cls = getattr(model, "_reverts_to", BatchNorm)
        # normlab's layers take `impl`; torch's do not.
        extra = {"impl": model.impl} if issubclass(cls, BatchNormBase) else {}
        bn = cls(
            model.num_features, eps=model.eps, momentum=model.momentum, affine=model.affine,
            track_running_stats=model.track_running_stats, **_factory_kwargs(model), **extra,
        )  # fmt: skip
        _copy_state(model, bn)
        return bn
    for child_name, child in model.named_children():
        new = revert_sync_batchnorm(child)
        if new is not child:
            setattr(model, child_name, new)
    return model
