"""The differentiable BatchNorm op: ``torch.library`` custom ops around the Triton launchers.

Custom ops (rather than a bare ``autograd.Function``) keep the op opaque to ``torch.compile``:
Dynamo records one call instead of tracing into Triton launches, and the registered fake
implementations give it output shapes. ``normlab::bn_forward`` mutates the running statistics in
place, which the op schema declares.

This module imports triton; ``normlab.kernels.batch_norm`` imports it only when available.
"""

from typing import Optional

import torch
from torch import Tensor

from normlab.kernels import launch


@torch.library.custom_op("normlab::bn_forward", mutates_args=("running_mean", "running_var"))
def bn_forward(
    x: Tensor,
    running_mean: Optional[Tensor],
    running_var: Optional[Tensor],
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    training: bool,
    momentum: float,
    eps: float,
    relu: bool,
) -> tuple[Tensor, Tensor]:
    """Returns y (x's dtype and strides) and stats ``[4, C]`` float32: mean, invstd, a, b."""
    return _forward_eager(x, running_mean, running_var, weight, bias, training, momentum, eps, relu)


def _forward_eager(x, running_mean, running_var, weight, bias, training, momentum, eps, relu):
    x = launch.make_dense(x)
    return launch.forward(x, running_mean, running_var, weight, bias, training, momentum, eps, relu)


@bn_forward.register_fake
def _(x, running_mean, running_var, weight, bias, training, momentum, eps, relu):
    x = launch.make_dense(x)
    return torch.empty_like(x), x.new_empty((4, x.shape[1]), dtype=torch.float32)


@torch.library.custom_op("normlab::bn_backward", mutates_args=())
def bn_backward(
    dy: Tensor, x: Tensor, stats: Tensor, weight: Optional[Tensor], training: bool, relu: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """dx (x's dtype), dweight and dbias (float32 ``[C]``)."""
    return _backward_eager(dy, x, stats, weight, training, relu)


def _backward_eager(dy, x, stats, weight, training, relu):
    return launch.backward(dy, launch.make_dense(x), stats, weight, training, relu)


@bn_backward.register_fake
def _(dy, x, stats, weight, training, relu):
    x = launch.make_dense(x)
    C = x.shape[1]
    f32 = dict(dtype=torch.float32)
    return torch.empty_like(x), x.new_empty((C,), **f32), x.new_empty((C,), **f32)


class BatchNormFunction(torch.autograd.Function):
    """Autograd around the two custom ops.

    The forward op mutates the running statistics, and torch.library refuses autograd formulas
    on mutating ops, so autograd lives here; Dynamo traces this Function and keeps both ops
    opaque.
    """

    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, training, momentum, eps, relu):
        # Eager calls skip the custom-op dispatcher (tens of us per call, which small layers
        # feel); under torch.compile the op keeps the Triton launches opaque to Dynamo.
        fwd = bn_forward if torch.compiler.is_compiling() else _forward_eager
        y, stats = fwd(x, running_mean, running_var, weight, bias, training, momentum, eps, relu)
        ctx.save_for_backward(x, stats, weight)
        ctx.training, ctx.relu = training, relu
        ctx.has_bias = bias is not None
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.mark_non_differentiable(stats)
        return y, stats

    @staticmethod
    @torch.autograd.function.once_differentiable  # a clear error on double backward
    def backward(ctx, dy, _dstats):
        x, stats, weight = ctx.saved_tensors
        bwd = bn_backward if torch.compiler.is_compiling() else _backward_eager
        dx, dw, db = bwd(dy, x, stats, weight, ctx.training, ctx.relu)
        dw = None if weight is None else dw.to(weight.dtype)
        db = None if not ctx.has_bias else db.to(ctx.bias_dtype)
        return dx, None, None, dw, db, None, None, None, None
