"""Fast BatchNorm kernels in Triton (optional: this package imports without Triton).

``batch_norm`` has the semantics of ``torch.nn.functional.batch_norm`` (plus an optional fused
ReLU) and runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (how CI tests it).
"""

import os

import torch
from torch import Tensor

__all__ = ["batch_norm", "triton_available"]

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


_triton_found: bool | None = None  # cached probe (a plain global: torch.compile traces it)


def triton_available() -> bool:
    """True when Triton can be imported (kernels may still need a CUDA tensor to run)."""
    global _triton_found
    if _triton_found is None:
        try:
            import triton  # noqa: F401

            _triton_found = True
        except ImportError:
            _triton_found = False
    return _triton_found


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _check(x, running_mean, running_var, weight, bias, training) -> None:
    """One clear error per bad input: what was expected, what was got, how to fix it."""
    if not triton_available():
        raise RuntimeError(
            "normlab.kernels.batch_norm needs Triton, which is not installed; "
            "install it with `pip install 'normlab[gpu]'` or use impl='torch' or 'reference'."
        )
    if not isinstance(x, Tensor):
        raise TypeError(f"batch_norm expected x to be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"expected 2D or higher input (got {x.dim()}D input): BatchNorm needs (N, C, ...)")
    if x.dtype not in _DTYPES:
        raise TypeError(
            f"batch_norm expected x of dtype float32, bfloat16 or float16, got {x.dtype}; "
            "cast the input (e.g. x.float())"
        )
    if x.device.type != "cuda" and not (x.device.type == "cpu" and _interpreting()):
        raise RuntimeError(
            f"normlab.kernels.batch_norm runs on CUDA tensors, got a tensor on {x.device}; "
            "move it to a GPU, set TRITON_INTERPRET=1 (before importing triton) to run CPU "
            "tensors in Triton's interpreter, or use impl='torch'"
        )
    C = x.shape[1]
    if x.numel() == 0:
        raise ValueError(f"batch_norm expected a non-empty input, got shape {tuple(x.shape)}")
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if t.shape != (C,):
            raise ValueError(
                f"batch_norm expected {name} of shape ({C},) to match input channels "
                f"(x.shape[1]={C}), got {tuple(t.shape)}"
            )
        if t.device != x.device:
            raise ValueError(f"batch_norm expected {name} on {x.device}, got {t.device}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(
            "batch_norm expected running_mean and running_var both given or both None, got "
            f"running_mean={'None' if running_mean is None else 'Tensor'}, "
            f"running_var={'None' if running_var is None else 'Tensor'}"
        )
    if not training and running_mean is None:
        raise ValueError(
            "batch_norm in eval mode (training=False) needs running_mean and running_var; "
            "pass them or use training=True"
        )
    if training and x.numel() // C <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")


def batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    relu: bool = False,
) -> Tensor:
    """BatchNorm with Triton kernels: ``torch.nn.functional.batch_norm`` semantics.

    Per channel ``c`` over the ``M = N * prod(spatial)`` values of the batch:

        mean_c = sum(x) / M,   var_c = sum((x - mean_c)^2) / M            (biased)
        y = (x - mean_c) / sqrt(var_c + eps) * weight_c + bias_c          (then max(y, 0) if relu)
        running_mean <- (1 - momentum) * running_mean + momentum * mean_c
        running_var  <- (1 - momentum) * running_var + momentum * var_c * M / (M - 1)

    In eval mode (``training=False``) the running statistics replace mean and var.

    Args:
        x: ``(N, C)``, ``(N, C, L)`` or ``(N, C, *spatial)``, NCHW-contiguous or channels-last,
            float32/bfloat16/float16 (accumulation is float32). Other strides are copied.
        running_mean, running_var: ``(C,)`` float buffers updated in place when ``training``;
            may be None when training.
        weight, bias: ``(C,)`` affine parameters or None.
        training: normalize with batch statistics (True) or running statistics (False).
        momentum: the exponential-average factor (resolve ``momentum=None`` to
            ``1 / num_batches_tracked`` before calling).
        eps: added to the variance.
        relu: fuse a ReLU after the affine (its mask is recomputed in backward).

    Returns:
        y, same shape, dtype and memory format as x. Differentiable in x, weight and bias.

    Example:
        >>> x = torch.randn(8, 16, 4, 4, device="cuda")
        >>> y = batch_norm(x, None, None, torch.ones(16, device="cuda"), None, training=True)
    """
    _check(x, running_mean, running_var, weight, bias, training)
    from normlab.kernels.op import BatchNormFunction  # imports triton

    y, _ = BatchNormFunction.apply(
        x, running_mean, running_var, weight, bias, bool(training), float(momentum), float(eps), bool(relu)
    )
    return y
