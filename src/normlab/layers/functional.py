"""Batch normalization written from the math, with an explicit closed-form backward pass.

For an input x of shape (N, C, *) and each channel c, over the M = N * prod(*) values of that
channel:

    mean_c = sum(x) / M
    var_c  = sum((x - mean_c)^2) / M                 (biased: this one normalizes)
    xhat   = (x - mean_c) / sqrt(var_c + eps)
    y      = gamma_c * xhat + beta_c

The running statistics (used in eval mode) are exponential averages with factor `momentum`:

    running_mean = (1 - momentum) * running_mean + momentum * mean_c
    running_var  = (1 - momentum) * running_var  + momentum * var_c * M / (M - 1)   (unbiased)

The backward pass does not differentiate through mean and var step by step; it uses the closed
form (with dy = dL/dy and sums over the M values of a channel):

    dbeta  = sum(dy)
    dgamma = sum(dy * xhat)
    dx     = gamma / sqrt(var + eps) * (dy - dbeta / M - xhat * dgamma / M)

In eval mode the statistics are constants, so dx = gamma / sqrt(running_var + eps) * dy.

These formulas are themselves written in differentiable ops of (x, gamma, dy) when autograd
needs them to be (double backward with create_graph=True, torch.func transforms, torch.compile),
so second derivatives, hessians and per-sample gradients are exact; plain first-order eager
backward uses a faster form with preallocated buffers.

Half and bfloat16 inputs are normalized in float32 (their statistics would lose digits) and the
output is cast back to the input dtype. The variance is computed as the mean of squared
deviations from the mean (two passes), never as E[x^2] - E[x]^2, so an input with
a large offset (mean 1e4, std 1) still normalizes correctly in float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "BatchNormChannelError",
    "batch_mean_var",
    "batch_norm",
    "batch_norm_train",
    "channel_shape",
    "check_batch_norm_input",
    "check_eps",
    "compute_dtype",
    "empty_batch_norm",
    "reduce_dims",
    "update_running_stats",
]

# Dtypes whose statistics are accumulated in float32.
_LOW_PRECISION = (torch.float16, torch.bfloat16)

# torch.compile traces this module's autograd.Function correctly from torch 2.13 on. Under
# torch 2.11 (measured on the GPU machine, aot_eager, CPU tensors) every gradient through it
# came out zero — silently wrong training — so there we refuse to be compiled instead.
_TORCH_VERSION = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
_COMPILES_CORRECTLY = _TORCH_VERSION >= (2, 13)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are computed in: float32 for half/bfloat16, else the input's."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def reduce_dims(x: Tensor) -> list[int]:
    """Every dim but the channel dim 1: [0, 2, 3, ...]."""
    return [0, *range(2, x.dim())]


def channel_shape(x: Tensor) -> list[int]:
    """Shape that broadcasts a (C,) vector against x: [1, C, 1, ...]."""
    return [1, x.shape[1]] + [1] * (x.dim() - 2)


class BatchNormChannelError(ValueError, RuntimeError):
    """An input whose channel count does not match the layer's.

    torch raises RuntimeError for it (from its kernel); normlab's user errors are ValueError.
    This is an instance of both, so code written against either catches it.
    """


def check_batch_norm_input(x: Tensor, num_features: int | None, training: bool, eps: float | None = None) -> None:
    """Raise one clear error for an input batch norm cannot take, in torch's order and with
    torch's exception types: rank (ValueError), one value per channel in training (ValueError),
    eps (ValueError: > 0 in training, >= 0 in eval), channels (`BatchNormChannelError`).

    A zero-size batch passes, as in torch: training on it returns an empty output.
    """
    if x.dim() < 2:
        raise ValueError(
            f"batch norm expected an input of shape (N, C, *) with at least 2 dims, got shape "
            f"{tuple(x.shape)}; add a batch dim with x.unsqueeze(0) if this is one sample"
        )
    if training and x.shape[0] * math.prod(x.shape[2:]) == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size "
            f"{tuple(x.shape)}; use a batch of at least 2 samples or call model.eval()"
        )
    if eps is not None:
        check_eps(eps, training)
    if num_features is not None and x.shape[1] != num_features:
        raise BatchNormChannelError(
            f"batch norm expected {num_features} channels in dim 1, got {x.shape[1]} "
            f"(input shape {tuple(x.shape)}); build the layer with num_features={x.shape[1]} "
            f"or pass channels in dim 1"
        )


def check_eps(eps: float, training: bool) -> None:
    """As torch's F.batch_norm: eps > 0 in training (it divides by sqrt(var + eps)), >= 0 in
    eval; else a ValueError."""
    if eps <= 0 if training else eps < 0:
        bound = "positive during training" if training else "non-negative"
        raise ValueError(
            f"batch_norm eps must be {bound}, but got {eps}; build the layer with a small positive eps such as 1e-5"
        )


def empty_batch_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """The output for a zero-size input (N = 0 or an empty spatial dim): empty, like x, and
    connected to weight and bias so that their gradients are zeros (C,), as torch's."""
    shape = channel_shape(x)
    y = x.to(compute_dtype(x.dtype))
    if weight is not None:
        y = y * weight.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    return y.to(x.dtype)


def batch_mean_var(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance (C,) of x (N, C, *), two-pass, differentiable.

    Computed in float32 for half/bfloat16 input. Same values as torch.var_mean(correction=0),
    which is ~20x slower on CPU than these plain reductions.
    """
    xc = x.to(compute_dtype(x.dtype))
    dims = reduce_dims(x)
    mean = xc.mean(dims)  # (C,)
    var = (xc - mean.view(channel_shape(x))).square().mean(dims)  # (C,)
    return mean, var


def _plain_ops() -> bool:
    """True when the op must be written in plain out-of-place ops: under torch.compile and
    torch.func transforms (vmap runs forward and backward on batched tensors, which take no
    `out=` buffers). Eager calls keep the preallocated buffers, which save CPU time."""
    return torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()


def _batched(t: Tensor) -> bool:
    """Whether t is a torch.func.vmap batched tensor (False outside vmap and compile)."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._functorch.is_batchedtensor(t)


def _normalize(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
    """Training-mode forward in plain differentiable ops: (y, mean (C,), biased var (C,)),
    y in the compute dtype."""
    mean, var = batch_mean_var(x)
    shape = channel_shape(x)
    scale = _gamma_invstd(torch.rsqrt(var + eps), weight)  # (C,)
    y = (x.to(mean.dtype) - mean.view(shape)) * scale.view(shape)
    if bias is not None:
        y = y + bias.to(y.dtype).view(shape)
    return y, mean, var


def _train_input_grads(x, weight, dy, eps, needs_x, needs_w, needs_b):
    """dx, dgamma, dbeta of training-mode BN in plain differentiable ops of (x, weight, dy).

    The statistics are recomputed from x, so differentiating this function (double backward,
    torch.func transforms) sees how they depend on x.
    """
    dtype = compute_dtype(x.dtype)
    shape, dims = channel_shape(x), reduce_dims(x)
    count = x.numel() // x.shape[1]  # M values per channel
    mean, var = batch_mean_var(x)  # (C,), (C,)
    invstd = torch.rsqrt(var + eps)  # (C,)
    xhat = (x.to(dtype) - mean.view(shape)) * invstd.view(shape)  # (N, C, *)
    dy_c = dy.to(dtype)
    dbeta = dy_c.sum(dims)  # (C,)
    dgamma = (dy_c * xhat).sum(dims)  # (C,)
    dx = None
    if needs_x:
        scale = _gamma_invstd(invstd, weight).view(shape)
        dx = scale * (dy_c - dbeta.view(shape) / count - xhat * dgamma.view(shape) / count)
    return dx, dgamma if needs_w else None, dbeta if needs_b else None


class _BatchNormTrain(torch.autograd.Function):
    """Training mode: normalize with the batch statistics. Returns (y, mean, biased var).

    Two implementations of one formula. Eager first-order calls use preallocated buffers and
    per-channel coefficients (fewer passes over the tensor, fewer allocations). Double backward
    (create_graph=True), torch.func transforms and torch.compile use `_train_input_grads`, plain
    ops that autograd and vmap can differentiate and batch (`generate_vmap_rule`).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
        if _plain_ops():
            y, mean, var = _normalize(x, weight, bias, eps)
            return y.to(x.dtype), mean, var
        xc = x.to(compute_dtype(x.dtype))
        shape = channel_shape(x)
        dims = reduce_dims(x)
        # Two passes: the mean, then the mean of squared deviations from it. Subtracting before
        # squaring keeps the digits of a large-offset input (mean 1e4) that E[x^2] - E[x]^2
        # would cancel away. (torch.var_mean computes the same but is ~20x slower on CPU.)
        mean = xc.mean(dims)  # (C,)
        centered = xc - mean.view(shape)  # (N, C, *)
        # One buffer holds the squared deviations, then y: on CPU a fresh large tensor costs
        # about as much as the arithmetic on it (page faults), so allocations are kept to two.
        out = torch.mul(centered, centered)  # (N, C, *)
        var = out.mean(dims)  # (C,) biased
        invstd = torch.rsqrt(var + eps)  # (C,)
        y = _scale_shift(centered, _gamma_invstd(invstd, weight), bias, out)
        return y.to(x.dtype), mean, var

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, eps = inputs
        _, mean, var = output
        # x itself (not x - mean): the double backward differentiates through it.
        ctx.save_for_backward(x, weight, mean, var)
        ctx.eps = eps
        ctx.bias_dtype = bias.dtype if bias is not None else None
        ctx.mark_non_differentiable(mean, var)

    @staticmethod
    def backward(ctx, dy: Tensor, _dmean: Tensor, _dvar: Tensor):
        x, weight, mean, var = ctx.saved_tensors
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled() or _plain_ops():
            dx, dw, db = _train_input_grads(x, weight, dy, ctx.eps, needs_x, needs_w, needs_b)
        else:
            dx, dw, db = _train_grads_fast(x, weight, mean, var, dy, ctx.eps, needs_x)
        dx = dx.to(dy.dtype) if needs_x else None
        dw = dw.to(weight.dtype) if needs_w else None
        db = db.to(ctx.bias_dtype) if needs_b else None
        return dx, dw, db, None


def _train_grads_fast(x, weight, mean, var, dy, eps, needs_x):
    """`_train_input_grads` for eager first-order backward, with one (N, C, *) buffer.

    The buffer holds dy * (x - mean) for dgamma, then x - mean again (recomputed: a pass is
    cheaper than a second buffer on CPU, where a fresh tensor costs page faults), then dx =
    (x - mean) * coef + shift + dy * scale with per-channel (C,) coefficients.
    """
    dtype = mean.dtype
    shape, dims = channel_shape(x), reduce_dims(x)
    count = x.numel() // x.shape[1]  # M values per channel
    invstd = torch.rsqrt(var + eps)  # (C,)
    mean = mean.view(shape)  # (1, C, 1, ...)
    dy_c = dy.to(dtype)
    dbeta = dy_c.sum(dims)  # (C,)
    buf = torch.sub(x, mean).mul_(dy_c)  # (N, C, *): dy * (x - mean)
    dgamma = buf.sum(dims) * invstd  # (C,) = sum(dy * xhat)
    dx = None
    if needs_x:
        scale = _gamma_invstd(invstd, weight)  # (C,)
        # dx = scale * (dy - dbeta/M - xhat * dgamma/M) with xhat = (x - mean) * invstd
        coef = -scale * invstd * dgamma / count  # (C,)
        shift = -scale * dbeta / count  # (C,)
        centered = torch.sub(x, mean, out=buf)  # (N, C, *)
        _scale_shift(centered, coef, shift, buf)
        dx = buf.addcmul_(dy_c, scale.view(shape))
    return dx, dgamma, dbeta


class _BatchNormEval(torch.autograd.Function):
    """Eval mode: normalize with given (running) statistics, which are constants.

    y = (x - mean) * invstd * gamma + beta is linear in x, gamma and beta; the backward below is
    plain differentiable ops of the saved inputs, so double backward and vmap are exact.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, mean: Tensor, var: Tensor, eps: float):
        dtype = compute_dtype(x.dtype)
        invstd = torch.rsqrt(var.to(dtype) + eps)  # (C,)
        centered = x.to(dtype) - mean.to(dtype).view(channel_shape(x))  # (N, C, *)
        scale = _gamma_invstd(invstd, weight)  # (C,)
        if _plain_ops():
            y = centered * scale.view(channel_shape(x))
            y = y if bias is None else y + bias.to(dtype).view(channel_shape(x))
        else:  # reuses `centered`'s memory for y
            y = _scale_shift(centered, scale, bias, centered)
        return y.to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, mean, var, eps = inputs
        ctx.save_for_backward(x, weight, mean, var)
        ctx.eps = eps
        ctx.bias_dtype = bias.dtype if bias is not None else None

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, weight, mean, var = ctx.saved_tensors
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
        dtype = compute_dtype(x.dtype)
        shape, dims = channel_shape(x), reduce_dims(x)
        dy_c = dy.to(dtype)
        invstd = torch.rsqrt(var.to(dtype) + ctx.eps)  # (C,)
        dx = dw = db = None
        if needs_x:
            dx = (dy_c * _gamma_invstd(invstd, weight).view(shape)).to(dy.dtype)
        if needs_w:
            centered = x.to(dtype) - mean.to(dtype).view(shape)  # (N, C, *)
            dw = ((dy_c * centered).sum(dims) * invstd).to(weight.dtype)
        if needs_b:
            db = dy_c.sum(dims).to(ctx.bias_dtype)
        return dx, dw, db, None, None, None


def _gamma_invstd(invstd: Tensor, weight: Tensor | None) -> Tensor:
    """gamma / sqrt(var + eps), (C,): the factor from x - mean to y (1/sqrt alone if no gamma)."""
    return invstd if weight is None else invstd * weight.to(invstd.dtype)


def _scale_shift(x: Tensor, scale: Tensor, shift: Tensor | None, out: Tensor) -> Tensor:
    """out = x * scale + shift, with (C,) `scale` and `shift` (or None) broadcast over x (N, C, *).

    One addcmul where channels are the innermost dim (N, C) or off the CPU. Otherwise a multiply
    then an in-place add: with two operands broadcast along the innermost (spatial) dim,
    addcmul leaves ATen's vectorized CPU loop and costs ~3x each of the two simple passes
    (2-core development CPU, 1 thread, (32, 64, 32, 32) float32: 1.2 ms against 0.4 ms).
    """
    shape = channel_shape(x)
    if shift is None:
        return torch.mul(x, scale.view(shape), out=out)
    shift = shift.to(out.dtype).view(shape)
    if x.dim() == 2 or x.device.type != "cpu":
        return torch.addcmul(shift, x, scale.view(shape), out=out)
    return torch.mul(x, scale.view(shape), out=out).add_(shift)


def update_running_stats(
    running_mean: Tensor | None,
    running_var: Tensor | None,
    mean: Tensor,
    var: Tensor,
    count: int | Tensor | None,
    momentum: float | Tensor,
) -> None:
    """In place: running = (1 - momentum) * running + momentum * batch, var made unbiased.

    `var` is the biased batch variance over `count` values per channel (count=None: `var` is
    already unbiased); `momentum` is a float or a 0-dim tensor (a tensor keeps `momentum=None`'s
    1/num_batches_tracked free of graph breaks).
    """
    with torch.no_grad():
        # lerp_: running + momentum * (batch - running), one op instead of three.
        if running_mean is not None:
            running_mean.lerp_(mean.detach().to(running_mean.dtype), momentum)
        if running_var is not None:
            unbiased = var.detach().to(running_var.dtype)
            if count is not None:
                unbiased = unbiased * (count / (count - 1))
            running_var.lerp_(unbiased, momentum)


def batch_norm_train(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Training-mode BN with batch statistics: (y, mean (C,), biased var (C,)); no buffers."""
    return _BatchNormTrain.apply(x, weight, bias, eps)


def batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float | Tensor | None = 0.1,
    eps: float = 1e-5,
    num_batches_tracked: Tensor | None = None,
) -> Tensor:
    """Batch normalization with the semantics of `torch.nn.functional.batch_norm`.

    Args:
        x: input of shape (N, C, *).
        running_mean, running_var: (C,) buffers or None. Used in eval mode; updated in place in
            training mode (running_var with the unbiased batch variance).
        weight, bias: (C,) gamma and beta, or None (no affine).
        training: True: normalize with the batch statistics; False: with the running ones.
        momentum: factor of the running-average update; a float or a 0-dim tensor. None: the
            cumulative average, factor 1 / num_batches_tracked.
        eps: added to the variance before the square root.
        num_batches_tracked: with momentum=None, the number of training batches seen so far,
            this one included (the caller increments it, as the BatchNorm modules do).

    Returns:
        y, same shape and dtype as x.

    Example:
        >>> x = torch.randn(8, 3, 5)
        >>> rm, rv = torch.zeros(3), torch.ones(3)
        >>> y = batch_norm(x, rm, rv, training=True)
        >>> torch.allclose(y.mean((0, 2)), torch.zeros(3), atol=1e-6)
        True
    """
    num_features = running_mean.numel() if running_mean is not None else None
    if num_features is None:  # as torch: the weight's size is checked when there are no buffers
        num_features = weight.numel() if weight is not None else None
    check_batch_norm_input(x, num_features, training, eps)
    # Checked before anything is updated in place, as torch does.
    if (running_mean is None) != (running_var is None):
        raise ValueError(
            "batch norm expected running_mean and running_var both given or both None, got only "
            f"{'running_var' if running_mean is None else 'running_mean'}; pass both or neither"
        )
    if running_var is not None and running_var.shape != running_mean.shape:
        raise ValueError(
            f"batch norm expected running_var of shape {tuple(running_mean.shape)} like "
            f"running_mean, got {tuple(running_var.shape)}; pass one (C,) buffer each"
        )
    if not training:
        if running_mean is None:
            raise ValueError(
                "batch norm in eval mode (training=False) needs running_mean and running_var; "
                "got None; pass training=True to normalize with batch statistics"
            )
        if x.numel() == 0:
            return empty_batch_norm(x, weight, bias)
        return _BatchNormEval.apply(x, weight, bias, running_mean, running_var, eps)
    if momentum is None and running_mean is not None:
        if num_batches_tracked is None:
            raise ValueError(
                "batch norm with momentum=None (cumulative average) needs num_batches_tracked, "
                "the count of batches including this one; pass it or a float momentum"
            )
        momentum = torch.reciprocal(num_batches_tracked.to(running_mean.dtype))
    if running_mean is not None and _batched(x) and not _batched(running_mean):
        # The update below would write per-sample statistics into one shared buffer.
        raise RuntimeError(
            "batch norm got a batched input under torch.func.vmap while running_mean and "
            "running_var, which training mode updates in place, are not batched; call "
            "torch.func.replace_all_batch_norm_modules_(model) to use batch statistics without "
            "running ones, or put the model in eval mode"
        )
    if not _COMPILES_CORRECTLY and torch.compiler.is_compiling():
        raise RuntimeError(
            f"normlab's reference batch norm under torch.compile needs torch >= 2.13, got "
            f"{torch.__version__}: this torch's compiler computes zero gradients through it; "
            f"use impl='torch' or 'triton' with torch.compile, or upgrade torch"
        )
    if x.numel() == 0:  # as torch: an empty output, the running statistics untouched
        return empty_batch_norm(x, weight, bias)
    y, mean, var = _BatchNormTrain.apply(x, weight, bias, eps)
    count = x.numel() // x.shape[1]
    update_running_stats(running_mean, running_var, mean, var, count, momentum)
    return y
