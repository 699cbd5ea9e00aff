"""Batch norm variants that fix its known limitations: Ghost BN and Batch Renormalization.

Both subclass `BatchNormBase` (same buffers, state-dict keys, eval mode and freezing) and
override only `forward_train`, the training-mode computation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from normlab.layers import functional
from normlab.layers.batchnorm import BatchNormBase

__all__ = ["GhostBatchNorm", "BatchRenorm"]


class GhostBatchNorm(BatchNormBase):
    r"""Ghost batch norm (Hoffer et al. 2017): BN statistics over virtual batches.

    In training mode the batch is split along N into chunks of `virtual_batch_size` samples
    (the last may be smaller; one that would hold a single value per channel joins the one
    before) and each chunk is normalized with its own mean and variance, as if
    it were a batch of its own; this keeps BN's noise level fixed while the real batch grows.
    The running statistics get one update per forward call, from the average over chunks of
    their means and unbiased variances (the statistics the chunks were normalized with). Eval
    mode is plain BN with the running statistics. Rank-agnostic: (N, C, *) input.

    Args:
        num_features: C.
        virtual_batch_size: samples per ghost batch (>= 2); a batch no larger is plain BN.
        eps, momentum, affine, track_running_stats, device, dtype, impl, bias, backend: as BatchNorm.

    Example:
        >>> gbn = GhostBatchNorm(16, virtual_batch_size=8)
        >>> gbn(torch.randn(32, 16)).shape  # 4 ghost batches of 8
        torch.Size([32, 16])
    """

    def __init__(
        self,
        num_features: int,
        virtual_batch_size: int = 32,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Any = None,
        dtype: torch.dtype | None = None,
        impl: str = "auto",
        *,
        bias: bool = True,
        backend: str | None = None,
    ) -> None:
        if not isinstance(virtual_batch_size, int) or virtual_batch_size < 2:
            raise ValueError(f"virtual_batch_size must be an int >= 2 (BN needs 2 samples), got {virtual_batch_size!r}")
        super().__init__(
            num_features, eps, momentum, affine, track_running_stats, device, dtype,
            bias=bias, impl=impl, backend=backend,
        )  # fmt: skip
        self.virtual_batch_size = virtual_batch_size

    def extra_repr(self) -> str:
        return super().extra_repr() + f", virtual_batch_size={self.virtual_batch_size}"

    def _chunk_sizes(self, x: Tensor) -> list[int]:
        """Ghost batch sizes along N; a last chunk of one value per channel joins the previous."""
        n, v = x.shape[0], self.virtual_batch_size
        sizes = [v] * (n // v) + ([n % v] if n % v else [])
        if len(sizes) > 1 and sizes[-1] * (x.numel() // (n * x.shape[1])) <= 1:
            last = sizes.pop()
            sizes[-1] += last
        return sizes

    def forward_train(self, x: Tensor, momentum: float | Tensor | None) -> Tensor:
        if x.shape[0] <= self.virtual_batch_size:
            return super().forward_train(x, momentum)
        outputs, means, variances = [], [], []
        for chunk in x.split(self._chunk_sizes(x), dim=0):  # (V, C, *) each
            y, mean, var = functional.batch_norm_train(chunk, self.weight, self.bias, self.eps)
            count = chunk.numel() // chunk.shape[1]
            outputs.append(y)
            means.append(mean)
            variances.append(var * (count / (count - 1)))  # unbiased, (C,)
        if momentum is not None:
            mean = torch.stack(means).mean(0)
            var = torch.stack(variances).mean(0)
            functional.update_running_stats(self.running_mean, self.running_var, mean, var, None, momentum)
        return torch.cat(outputs, dim=0)


class BatchRenorm(BatchNormBase):
    r"""Batch renormalization (Ioffe 2017): BN corrected toward the running statistics.

    In training mode, with batch mean/std (mu_B, sigma_B = sqrt(var_B + eps)) and running
    (mu, sigma = sqrt(running_var + eps)):

    .. math::
        r = \mathrm{clip}_{[1/r_{max}, r_{max}]}(\sigma_B / \sigma), \quad
        d = \mathrm{clip}_{[-d_{max}, d_{max}]}((\mu_B - \mu) / \sigma)

        y = \gamma \left(\frac{x - \mu_B}{\sigma_B} r + d\right) + \beta

    r and d are treated as constants in the backward pass (stop-gradient). With r_max=1 and
    d_max=0 this is exactly BN; larger limits make training outputs match eval outputs, which
    helps small and non-i.i.d. batches. The limits ramp linearly from (1, 0) to (r_max, d_max)
    over the first `warmup_steps` training batches (counted by `num_batches_tracked`), as the
    paper starts from plain BN. Eval mode is plain BN with the running statistics.

    Args:
        num_features: C.
        r_max: >= 1, limit of the scale correction r.
        d_max: >= 0, limit of the shift correction d (in running-std units).
        warmup_steps: batches over which the limits ramp up; 0: full limits at once.
        eps, momentum, affine, device, dtype, impl, bias, backend: as BatchNorm (running statistics are
            required: Batch Renorm is defined by them).

    Shape: (N, C, *) -> same.

    Example:
        >>> brn = BatchRenorm(16, r_max=3.0, d_max=5.0, warmup_steps=1000)
        >>> brn(torch.randn(8, 16, 4, 4)).shape
        torch.Size([8, 16, 4, 4])
    """

    def __init__(
        self,
        num_features: int,
        r_max: float = 3.0,
        d_max: float = 5.0,
        warmup_steps: int = 0,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        device: Any = None,
        dtype: torch.dtype | None = None,
        impl: str = "auto",
        *,
        bias: bool = True,
        backend: str | None = None,
    ) -> None:
        if not r_max >= 1.0:
            raise ValueError(f"r_max must be >= 1 (r is clipped to [1/r_max, r_max]), got {r_max}")
        if not d_max >= 0.0:
            raise ValueError(f"d_max must be >= 0 (d is clipped to [-d_max, d_max]), got {d_max}")
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
        super().__init__(
            num_features, eps, momentum, affine, True, device, dtype, bias=bias, impl=impl, backend=backend
        )
        self.r_max = float(r_max)
        self.d_max = float(d_max)
        self.warmup_steps = warmup_steps

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", r_max={self.r_max}, d_max={self.d_max}, warmup_steps={self.warmup_steps}")

    def limits(self) -> tuple[Tensor, Tensor]:
        """Current (r_max, d_max) as 0-dim tensors, after the linear warm-up."""
        steps = self.num_batches_tracked.to(self.running_var.dtype)
        if self.warmup_steps == 0:
            progress = torch.ones_like(steps)
        else:
            progress = (steps / self.warmup_steps).clamp(max=1.0)
        return 1.0 + (self.r_max - 1.0) * progress, self.d_max * progress

    def forward_train(self, x: Tensor, momentum: float | Tensor | None) -> Tensor:
        mean, var, count = BatchNormBase.batch_stats(self, x)  # (C,), (C,), M
        std = torch.sqrt(var + self.eps)  # (C,)
        running_std = torch.sqrt(self.running_var + self.eps)
        r_max, d_max = self.limits()
        with torch.no_grad():  # r and d are constants for the backward pass
            r = (std / running_std).clamp(min=1.0 / r_max, max=r_max)
            d = ((mean - self.running_mean) / running_std).clamp(min=-d_max, max=d_max)
        if momentum is not None:  # after r and d: they use the statistics before this batch
            functional.update_running_stats(self.running_mean, self.running_var, mean, var, count, momentum)
        shape = functional.channel_shape(x)
        scale = (r / std).view(shape)  # (1, C, 1, ...)
        y = (x.to(mean.dtype) - mean.view(shape)) * scale + d.view(shape)
        if self.weight is not None:
            y = y * self.weight.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y.to(x.dtype)
