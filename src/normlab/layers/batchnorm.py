"""BatchNorm modules: drop-in for torch.nn.BatchNorm1d/2d/3d, plus a rank-agnostic BatchNorm.

Every class here is a subclass of torch's `_BatchNorm` (and BatchNorm1d/2d/3d of torch's
BatchNorm1d/2d/3d), so torch's tools treat them as batch norm: `swa_utils.update_bn`,
`SyncBatchNorm.convert_sync_batchnorm`, `torch.func.replace_all_batch_norm_modules_`. They keep
torch's constructor, parameters, buffers, state-dict keys and train/eval semantics, override
`forward` and the input check, and add an `impl` switch (see `normlab.layers.implementations`), a
real frozen mode (`freeze()`: running statistics in training mode too, no updates) and a
`momentum=None` that compiles with `torch.compile(fullgraph=True)`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from normlab._deprecated import renamed_argument, warn_renamed
from normlab.layers import functional
from normlab.layers.implementations import check_impl, dispatch_batch_norm, resolve_impl

__all__ = ["BatchNormBase", "BatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]

# torch added the keyword-only `bias` argument in 2.13; older versions (the GPU machine's 2.11)
# lack it, so bias=False is applied after their constructor there.
_TORCH_TAKES_BIAS = "bias" in inspect.signature(_BatchNorm.__init__).parameters


class BatchNormBase(_BatchNorm):
    r"""Batch normalization over dim 1 of an (N, C, *) input (the shared base class).

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    with mean and biased variance per channel over N and all trailing dims in training mode
    (`running_var` stores the unbiased variance), and the running statistics in eval mode.

    Args:
        num_features: C, the number of channels.
        eps: added to the variance for numerical stability; > 0 in training, >= 0 in eval
            (checked in forward, as torch).
        momentum: factor of the running-average update; None: cumulative average over
            `num_batches_tracked` batches.
        affine: learn a per-channel gamma (`weight`, init 1) and beta (`bias`, init 0).
        track_running_stats: keep running statistics for eval mode; if False, batch statistics
            are used in eval mode too and no buffers exist.
        device, dtype: of the parameters and buffers.
        bias (keyword-only): with affine, learn beta too; False: gamma only, as torch 2.13.
        impl (keyword-only): which implementation computes it: "auto" | "reference" |
            "torch" | "triton" (see `normlab.layers.implementations`).
        backend (keyword-only): the deprecated name of `impl`; warns.

    Shape: (N, C, *) -> same; the subclasses restrict the rank (BatchNorm2d: 4D, ...). N may be
    0: training then returns an empty output and counts the batch, as torch.

    Errors are raised when torch raises them and are instances of torch's types: a wrong rank,
    one value per channel in training and a bad eps are ValueError; a wrong channel count is
    `functional.BatchNormChannelError`, both a ValueError and torch's RuntimeError.
    Deliberately stricter than torch: `num_features` must be a positive int and `momentum` in
    [0, 1] or None (ValueError at construction), and the channel count is checked even without
    affine parameters or running statistics (where torch's kernel has nothing to check it with).

    Example:
        >>> bn = BatchNorm2d(16, momentum=None, impl="reference")
        >>> y = bn(torch.randn(8, 16, 4, 4))  # training: batch statistics, running ones updated
        >>> y = bn.eval()(torch.randn(1, 16, 4, 4))  # eval: running statistics

    Extension hooks, from the smallest change to the largest:
    - `batch_stats(x) -> (mean, var, count)`: the training-mode statistics (e.g. reduced
      across processes). When a subclass overrides it, training-mode forward normalizes with
      those statistics through autograd (so gradients flow through whatever `batch_stats` did)
      instead of a fused implementation, and updates the running statistics from them.
    - `forward_train(x, momentum)`: the whole training-mode computation (Ghost BN, Batch
      Renorm); `momentum` is the resolved running-average factor, None when not updating.
    - `forward(x)` with the helpers `uses_batch_stats()`, `_check_input_dim(x)` and
      `_momentum_factor()` (SyncBatchNorm, which needs its own autograd function).
    """

    # Input ranks this class accepts, and how the error message names them.
    _min_dim, _max_dim, _rank_text = 2, 5, "2D to 5D"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
        impl: str = "auto",
        backend: str | None = None,
    ) -> None:
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None (cumulative average), got {momentum!r}")
        impl = check_impl(renamed_argument("backend", backend, "impl", impl, default="auto", where=type(self).__name__))
        extra = {"bias": bias} if _TORCH_TAKES_BIAS else {}
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, **extra)
        if affine and not bias and not _TORCH_TAKES_BIAS:
            self.register_parameter("bias", None)
        self.impl = impl
        # Frozen: normalize with the running statistics and never update them, in train mode too.
        self.frozen = False

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.impl != "auto":
            text += f", impl={self.impl!r}"
        return text + (", frozen=True" if self.frozen else "")

    @property
    def backend(self) -> str:
        """The deprecated name of `impl`; warns."""
        warn_renamed("BatchNorm.backend", "BatchNorm.impl")
        return self.impl

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a whole module pickled (torch.save(model)) when `impl` was called `backend`
        if "backend" in state and "impl" not in state:
            state = {**state, "impl": state["backend"]}
            del state["backend"]
        super().__setstate__(state)

    # --- modes ----------------------------------------------------------------------------
    def freeze(self) -> BatchNormBase:
        """Use the running statistics and stop updating them, even in training mode."""
        if not self.track_running_stats:
            raise ValueError(
                "cannot freeze a batch norm built with track_running_stats=False: it has no "
                "running statistics to normalize with; build it with track_running_stats=True"
            )
        self.frozen = True
        return self

    def unfreeze(self) -> BatchNormBase:
        """Back to normal: batch statistics and updates in training mode."""
        self.frozen = False
        return self

    # --- forward --------------------------------------------------------------------------
    def _check_input_dim(self, x: Tensor) -> None:
        if not self._min_dim <= x.dim() <= self._max_dim:
            if (self._min_dim, self._max_dim) == (2, 5):  # already rank-agnostic
                fix = "add a batch dim with x.unsqueeze(0) or merge trailing dims with x.flatten(2)"
            else:
                fix = "use normlab.layers.BatchNorm for any rank from 2D to 5D"
            raise ValueError(f"expected {self._rank_text} input (got {x.dim()}D input) of shape (N, C, *); {fix}")

    def uses_batch_stats(self) -> bool:
        """True when forward normalizes with the batch statistics (not the running ones).

        As torch: in training mode, and in eval mode when there are no running statistics
        (track_running_stats=False, or removed by `torch.func.replace_all_batch_norm_modules_`).
        A frozen layer with running statistics never does.
        """
        if self.running_mean is None and self.running_var is None:
            return True
        return self.training and not self.frozen

    def updates_running_stats(self) -> bool:
        """True when this forward updates the running statistics (and counts the batch)."""
        return self.training and not self.frozen and self.track_running_stats and self.running_mean is not None

    def _momentum_factor(self) -> float | Tensor:
        """Count this batch; return the running-average factor for it.

        momentum=None is a cumulative average, factor 1/num_batches_tracked. Eager mode uses a
        Python float, exactly as torch; while compiling it stays a 0-dim tensor, because
        float(tensor) would break the graph.
        """
        if self.num_batches_tracked is None:  # as torch: no counter, no cumulative average
            return self.momentum if self.momentum is not None else 0.0
        self.num_batches_tracked.add_(1)
        if self.momentum is not None:
            return self.momentum
        if torch.compiler.is_compiling():
            return torch.reciprocal(self.num_batches_tracked.to(self.running_mean.dtype))
        return 1.0 / float(self.num_batches_tracked)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        batch_stats = self.uses_batch_stats()
        functional.check_batch_norm_input(x, self.num_features, batch_stats, self.eps)
        if not batch_stats:
            impl = resolve_impl(self.impl, x)
            return dispatch_batch_norm(
                impl, x, self.running_mean, self.running_var, self.weight, self.bias,
                False, 0.0, self.eps,
            )  # fmt: skip
        momentum = self._momentum_factor() if self.updates_running_stats() else None
        if x.numel() == 0:  # as torch: the batch is counted, the statistics stay
            return functional.empty_batch_norm(x, self.weight, self.bias)
        return self.forward_train(x, momentum)

    def forward_train(self, x: Tensor, momentum: float | Tensor | None) -> Tensor:
        """Normalize with batch statistics; update the running ones unless momentum is None."""
        if type(self).batch_stats is not BatchNormBase.batch_stats:
            return self._forward_with_stats_hook(x, momentum)
        impl = resolve_impl(self.impl, x)
        updating = momentum is not None
        return dispatch_batch_norm(
            impl, x,
            self.running_mean if updating else None,
            self.running_var if updating else None,
            self.weight, self.bias, True, momentum if updating else 0.0, self.eps,
        )  # fmt: skip

    def batch_stats(self, x: Tensor) -> tuple[Tensor, Tensor, int | Tensor]:
        """Hook: (mean (C,), biased variance (C,), values per channel) of the batch x.

        Must be differentiable in x. The default is the local batch; overriding it switches
        training-mode forward to `_forward_with_stats_hook`.
        """
        mean, var = functional.batch_mean_var(x)
        return mean, var, x.numel() // x.shape[1]

    def _forward_with_stats_hook(self, x: Tensor, momentum: float | Tensor | None) -> Tensor:
        mean, var, count = self.batch_stats(x)  # (C,), (C,), M
        if momentum is not None:
            functional.update_running_stats(self.running_mean, self.running_var, mean, var, count, momentum)
        shape = functional.channel_shape(x)  # (1, C, 1, ...)
        y = (x.to(mean.dtype) - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.weight is not None:
            y = y * self.weight.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y.to(x.dtype)


class BatchNorm(BatchNormBase):
    """Rank-agnostic batch norm: the same module takes (N, C), (N, C, L), (N, C, H, W) and
    (N, C, D, H, W) input. It is what `create_norm("batch", C)` returns.

    Same math, arguments and state-dict keys as `BatchNormBase` (and torch's BatchNorm*d).

    Example:
        >>> bn = BatchNorm(16)
        >>> bn(torch.randn(8, 16)).shape, bn(torch.randn(8, 16, 4, 4)).shape
        (torch.Size([8, 16]), torch.Size([8, 16, 4, 4]))
    """


class BatchNorm1d(BatchNormBase, nn.BatchNorm1d):
    """Drop-in for (and a subclass of) `torch.nn.BatchNorm1d`: (N, C) or (N, C, L) input.

    Example:
        >>> bn = BatchNorm1d(16, impl="reference")
        >>> bn(torch.randn(8, 16, 10)).shape
        torch.Size([8, 16, 10])
    """

    _min_dim, _max_dim, _rank_text = 2, 3, "2D or 3D"


class BatchNorm2d(BatchNormBase, nn.BatchNorm2d):
    """Drop-in for (and a subclass of) `torch.nn.BatchNorm2d`: (N, C, H, W) input.

    Example:
        >>> bn = BatchNorm2d(3)
        >>> bn(torch.randn(4, 3, 8, 8)).shape
        torch.Size([4, 3, 8, 8])
    """

    _min_dim, _max_dim, _rank_text = 4, 4, "4D"


class BatchNorm3d(BatchNormBase, nn.BatchNorm3d):
    """Drop-in for (and a subclass of) `torch.nn.BatchNorm3d`: (N, C, D, H, W) input.

    Example:
        >>> bn = BatchNorm3d(3)
        >>> bn(torch.randn(2, 3, 4, 4, 4)).shape
        torch.Size([2, 3, 4, 4, 4])
    """

    _min_dim, _max_dim, _rank_text = 5, 5, "5D"
