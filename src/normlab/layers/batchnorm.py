"""BatchNorm modules: drop-in for torch.nn.BatchNorm1d/2d/3d, plus a rank-agnostic BatchNorm.

All share `BatchNormBase`: torch's constructor, parameters, buffers and state-dict keys
(`weight, bias, running_mean, running_var, num_batches_tracked`), torch's train/eval semantics,
and a `backend` switch (see `normlab.layers.backends`). On top of torch they add a real frozen
mode (`freeze()`: running statistics in training mode too, no updates) and a `momentum=None`
that compiles with `torch.compile(fullgraph=True)`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from normlab.layers import functional
from normlab.layers.backends import check_backend, dispatch_batch_norm, resolve_backend

__all__ = ["BatchNormBase", "BatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


class BatchNormBase(nn.Module):
    r"""Batch normalization over dim 1 of an (N, C, *) input (the shared base class).

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \gamma + \beta

    with mean and biased variance per channel over N and all trailing dims in training mode
    (`running_var` stores the unbiased variance), and the running statistics in eval mode.

    Args:
        num_features: C, the number of channels.
        eps: added to the variance for numerical stability.
        momentum: factor of the running-average update; None: cumulative average over
            `num_batches_tracked` batches.
        affine: learn a per-channel gamma (`weight`, init 1) and beta (`bias`, init 0).
        track_running_stats: keep running statistics for eval mode; if False, batch statistics
            are used in eval mode too and no buffers exist.
        device, dtype: of the parameters and buffers.
        backend: "auto" | "reference" | "torch" | "triton" (see `normlab.layers.backends`).

    Shape: (N, C, *) -> same; the subclasses restrict the rank (BatchNorm2d: 4D, ...).

    Example:
        >>> bn = BatchNorm2d(16, momentum=None, backend="reference")
        >>> y = bn(torch.randn(8, 16, 4, 4))  # training: batch statistics, running ones updated
        >>> y = bn.eval()(torch.randn(1, 16, 4, 4))  # eval: running statistics

    Extension hooks, from the smallest change to the largest:
    - `batch_stats(x) -> (mean, var, count)`: the training-mode statistics (e.g. reduced
      across processes). When a subclass overrides it, training-mode forward normalizes with
      those statistics through autograd (so gradients flow through whatever `batch_stats` did)
      instead of a fused backend, and updates the running statistics from them.
    - `forward_train(x, momentum)`: the whole training-mode computation (Ghost BN, Batch
      Renorm); `momentum` is the resolved running-average factor, None when not updating.
    - `forward(x)` with the helpers `uses_batch_stats()`, `_check_input_dim(x)` and
      `_momentum_factor()` (SyncBatchNorm, which needs its own autograd function).
    """

    _version = 2
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
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(
                f"momentum must be in [0, 1] or None (cumulative average), got {momentum!r}"
            )
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.backend = check_backend(backend)
        # Frozen: normalize with the running statistics and never update them, in train mode too.
        self.frozen = False
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            self.bias = nn.Parameter(torch.empty(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked",
                torch.tensor(0, dtype=torch.long, device=device),
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    # --- state, as torch ------------------------------------------------------------------
    def reset_running_stats(self) -> None:
        """Running mean 0, running var 1, no batches tracked."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics, gamma to 1 and beta to 0."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        text = (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )
        if self.backend != "auto":
            text += f", backend={self.backend!r}"
        return text + (", frozen=True" if self.frozen else "")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, *args):
        # As torch: checkpoints older than version 2 have no num_batches_tracked.
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long, device=self.running_mean.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, *args)

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
            raise ValueError(
                f"expected {self._rank_text} input (got {x.dim()}D input) of shape (N, C, *); {fix}"
            )

    def uses_batch_stats(self) -> bool:
        """True when forward normalizes with the batch statistics (not the running ones)."""
        if not self.track_running_stats:
            return True
        return self.training and not self.frozen

    def _momentum_factor(self) -> float | Tensor:
        """Count this batch; return the running-average factor for it.

        momentum=None is a cumulative average, factor 1/num_batches_tracked. Eager mode uses a
        Python float, exactly as torch; while compiling it stays a 0-dim tensor, because
        float(tensor) would break the graph.
        """
        self.num_batches_tracked.add_(1)
        if self.momentum is not None:
            return self.momentum
        if torch.compiler.is_compiling():
            return torch.reciprocal(self.num_batches_tracked.to(self.running_mean.dtype))
        return 1.0 / float(self.num_batches_tracked)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        batch_stats = self.uses_batch_stats()
        functional.check_batch_norm_input(x, self.num_features, training=batch_stats)
        if not batch_stats:
            backend = resolve_backend(self.backend, x)
            return dispatch_batch_norm(
                backend, x, self.running_mean, self.running_var, self.weight, self.bias,
                False, 0.0, self.eps,
            )  # fmt: skip
        updating = self.training and self.track_running_stats
        momentum = self._momentum_factor() if updating else None
        return self.forward_train(x, momentum)

    def forward_train(self, x: Tensor, momentum: float | Tensor | None) -> Tensor:
        """Normalize with batch statistics; update the running ones unless momentum is None."""
        if type(self).batch_stats is not BatchNormBase.batch_stats:
            return self._forward_with_stats_hook(x, momentum)
        backend = resolve_backend(self.backend, x)
        updating = momentum is not None
        return dispatch_batch_norm(
            backend, x,
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
            functional.update_running_stats(
                self.running_mean, self.running_var, mean, var, count, momentum
            )
        shape = functional.channel_shape(x)  # (1, C, 1, ...)
        y = (x.to(mean.dtype) - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.weight is not None:
            y = y * self.weight.view(shape) + self.bias.view(shape)
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


class BatchNorm1d(BatchNormBase):
    """Drop-in for `torch.nn.BatchNorm1d`: (N, C) or (N, C, L) input.

    Example:
        >>> bn = BatchNorm1d(16, backend="reference")
        >>> bn(torch.randn(8, 16, 10)).shape
        torch.Size([8, 16, 10])
    """

    _min_dim, _max_dim, _rank_text = 2, 3, "2D or 3D"


class BatchNorm2d(BatchNormBase):
    """Drop-in for `torch.nn.BatchNorm2d`: (N, C, H, W) input.

    Example:
        >>> bn = BatchNorm2d(3)
        >>> bn(torch.randn(4, 3, 8, 8)).shape
        torch.Size([4, 3, 8, 8])
    """

    _min_dim, _max_dim, _rank_text = 4, 4, "4D"


class BatchNorm3d(BatchNormBase):
    """Drop-in for `torch.nn.BatchNorm3d`: (N, C, D, H, W) input.

    Example:
        >>> bn = BatchNorm3d(3)
        >>> bn(torch.randn(2, 3, 4, 4, 4)).shape
        torch.Size([2, 3, 4, 4, 4])
    """

    _min_dim, _max_dim, _rank_text = 5, 5, "5D"
