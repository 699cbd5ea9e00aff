"""Which implementation computes batch norm: our reference, torch's native kernel, or Triton.

Every implementation has the semantics of `torch.nn.functional.batch_norm`. "auto" picks, per input,
the one measured fastest there, and the engine trains with it:
- CUDA, NCHW-contiguous input of 16 MB or more (float32/bfloat16/float16): normlab's Triton
  kernels, when usable. On an H100 they ran 1.4-41x faster than torch's kernels in eager mode
  there (benchmarks/results/bn_kernels_v3_h100.json), bfloat16 most of all.
- Other CUDA input: torch's kernel. Triton lost there in eager mode (0.13-0.8x on 3-6 MB
  tensors, where three launches and Python dominate; 0.2-0.75x on (8192, 512); mostly slower on
  channels-last, where torch already uses cuDNN's NHWC kernels).
- CPU: torch's kernel, about 1.6-2.0x faster than the reference written in PyTorch ops
  (geomean of minimum forward + backward times, benchmarks/layers_cpu.py --threads 1 on the
  2-core development CPU at load ~4.5, 2026-12-05: 1.61, 1.81, 1.84, 2.03; most on (N, C)
  input, where Python and autograd overhead dominate).
The reference stays the readable definition that the others are tested against.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import Tensor

from normlab.layers import functional

__all__ = [
    "IMPLS",
    "TRITON_MIN_BYTES",
    "check_impl",
    "dispatch_batch_norm",
    "prefers_triton",
    "resolve_impl",
]

IMPLS = ("auto", "reference", "torch", "triton")


def check_impl(impl: str) -> str:
    """Return `impl` if it is a known name, else raise a ValueError listing the names."""
    if impl not in IMPLS:
        raise ValueError(f"unknown batch norm implementation {impl!r}; expected one of {', '.join(IMPLS)}")
    return impl


@functools.cache  # asked on first use, so importing normlab.layers never imports Triton
def triton_usable() -> bool:
    """True when `normlab.kernels` imports and reports a working Triton."""
    try:
        from normlab import kernels

        return bool(kernels.triton_available()) and hasattr(kernels, "batch_norm")
    except (ImportError, AttributeError):
        return False


TRITON_MIN_BYTES = 16 * 2**20
"""Smallest input (bytes) that "auto" sends to Triton: below it launch overhead dominates."""


def prefers_triton(x: Tensor) -> bool:
    """Whether normlab's Triton kernels beat torch's on this input's layout, size and dtype
    (measured on an H100, see the module docstring); the device is not considered here."""
    fast_dtype = x.dtype in (torch.float32, torch.bfloat16, torch.float16)  # float64: torch
    nchw = x.dim() >= 3 and x.is_contiguous()  # (N, C, *) with the spatial dims innermost
    return fast_dtype and nchw and x.numel() * x.element_size() >= TRITON_MIN_BYTES


def resolve_impl(impl: str, x: Tensor) -> str:
    """The concrete implementation for this input: "auto" becomes "triton" or "torch" (see above)."""
    if impl != "auto":
        return impl
    return "triton" if x.is_cuda and prefers_triton(x) and triton_usable() else "torch"


def _triton_batch_norm(x: Tensor):
    """`normlab.kernels.batch_norm`, or one clear error saying why it cannot run here."""
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            f"impl='triton' needs a CUDA tensor, got one on {x.device}; set "
            f"TRITON_INTERPRET=1 to run the kernels in Triton's (slow) interpreter on CPU, or "
            f"use impl='auto', 'torch' or 'reference'"
        )
    try:
        from normlab.kernels import batch_norm as kernel
    except ImportError as err:
        raise RuntimeError(
            f"impl='triton' needs Triton and normlab.kernels ({err}); install it with "
            f"pip install 'normlab[gpu]', or use impl='auto', 'torch' or 'reference'"
        ) from err
    return kernel


def dispatch_batch_norm(
    impl: str,
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float | Tensor,
    eps: float,
) -> Tensor:
    """F.batch_norm semantics on the chosen (already resolved) implementation.

    `momentum` may be a 0-dim tensor (momentum=None's 1/num_batches_tracked while compiling).
    The reference takes it as is; torch's and Triton's kernels want a Python float, so there
    the running statistics are updated here and the kernel only normalizes.
    """
    if impl == "reference":
        return functional.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    kernel = F.batch_norm if impl == "torch" else _triton_batch_norm(x)
    if training and isinstance(momentum, Tensor) and running_mean is not None:
        with torch.no_grad():
            mean, var = functional.batch_mean_var(x.detach())  # (C,), (C,)
            count = x.numel() // x.shape[1]
            functional.update_running_stats(running_mean, running_var, mean, var, count, momentum)
        return kernel(x, None, None, weight, bias, True, 0.0, eps)
    return kernel(x, running_mean, running_var, weight, bias, training, float(momentum), eps)
