r"""Noisy batch norm (Santurkar et al. 2018, Sec. 2.1): BN followed by injected, time-varying,
non-zero-mean, non-unit-variance noise that deliberately *increases* the shift in the
distribution each later layer receives. If BN worked by keeping that distribution stable,
this layer should train much worse than BN; Santurkar et al. found it trains about as well
(their Fig. 2).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from normlab.layers import functional
from normlab.layers.batchnorm import BatchNormBase

__all__ = ["NoisyBatchNorm", "held_noise"]


class NoisyBatchNorm(BatchNormBase):
    r"""Batch norm whose training-mode output is scaled and shifted by random noise whose
    distribution changes at every step.

    At each training-mode forward (one step) t, per channel c, the noise distribution's
    parameters are drawn afresh:

    .. math::
        \mu_{t,c} \sim U(-\text{mean\_max}, \text{mean\_max}), \qquad
        \nu_{t,c} \sim U(\text{scale\_min}, \text{scale\_max})

    and then each activation (every n, c and trailing position) gets its own scale and shift
    around them, :math:`s = \nu_{t,c} + \sigma \epsilon`, :math:`m = \mu_{t,c} + \sigma \epsilon'`
    with :math:`\epsilon, \epsilon' \sim N(0, 1)` i.i.d. and :math:`\sigma` = `sample_std`:

    .. math::
        y = s \odot \mathrm{BN}_{\gamma,\beta}(x) + m

    So the noise has a non-zero mean and a non-unit scale, both different for every unit and
    every step. The running statistics are BN's, from the batch before the noise.

    Eval mode (and a frozen layer, which normalizes with its running statistics): plain BN, no
    noise, like dropout; this is the network the study evaluates.

    Randomness comes only from the layer's own generator: `generator` if given (it must be on
    the input's device), else one created on the input's device at the first forward and
    seeded with `seed` (made again from `seed` if the layer moves to another device). With
    `seed=None` (the default) the seed is drawn once, at construction, from torch's global
    generator, as weight initialization is: under `torch.manual_seed(s)` (which the engine
    sets per run) every layer of every run gets its own reproducible noise stream, and forward
    never touches the global generator. Two layers given the same seed draw the same noise.
    The generator's state is not in the state dict: a resumed run draws new noise.

    Args:
        num_features: C.
        mean_max: half-width of the uniform range of the per-step mean shift mu (>= 0).
        scale_min, scale_max: the uniform range of the per-step scale nu (0 <= min <= max).
        sample_std: sigma, the per-activation spread around mu and nu (>= 0; 0: every
            activation of a channel gets the same shift and scale at a step).
        seed: seeds the layer's own generator when `generator` is None; None: drawn from
            torch's global generator at construction.
        generator: a torch.Generator to draw from instead.
        eps, momentum, affine, track_running_stats, device, dtype, impl, bias, backend: as BatchNorm.

    Attributes (for inspection and tests, updated by each noisy forward):
        last_params: (mu (C,), nu (C,)) of the last step.
        last_noise: (s, m), each the input's shape, of the last step.
        hold: when True, a training forward reuses `last_noise` (same input shape) instead of
            drawing: the network is deterministic while a probe measures it (ICS).

    Shape: (N, C, *) -> same.

    Example:
        >>> nbn = NoisyBatchNorm(16, mean_max=0.5, scale_min=1.0, scale_max=1.5, seed=3)
        >>> nbn(torch.randn(8, 16)).shape
        torch.Size([8, 16])
    """

    def __init__(
        self,
        num_features: int,
        mean_max: float = 1.0,
        scale_min: float = 0.5,
        scale_max: float = 2.0,
        sample_std: float = 0.1,
        seed: int | None = None,
        generator: torch.Generator | None = None,
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
        if not mean_max >= 0 or not 0 <= scale_min <= scale_max or not sample_std >= 0:
            raise ValueError(
                f"noisy batch norm needs mean_max >= 0, 0 <= scale_min <= scale_max and "
                f"sample_std >= 0, got mean_max={mean_max!r}, scale_min={scale_min!r}, "
                f"scale_max={scale_max!r}, sample_std={sample_std!r}"
            )
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype, bias=bias, impl=impl, backend=backend)  # fmt: skip
        self.mean_max, self.scale_min, self.scale_max = mean_max, scale_min, scale_max
        if seed is None:  # one draw, at construction, like a weight init
            # on the CPU explicitly: under `with torch.device("meta")` (a shape-only build) too
            seed = int(torch.randint(0, 2**62, (), dtype=torch.int64, device="cpu"))
        self.sample_std, self.seed = sample_std, seed
        self.generator = generator
        self._own_generator = False
        self.hold = False
        self.last_params: tuple[Tensor, Tensor] | None = None
        self.last_noise: tuple[Tensor, Tensor] | None = None

    def extra_repr(self) -> str:
        return (
            super().extra_repr() + f", mean_max={self.mean_max}, scale=[{self.scale_min}, "
            f"{self.scale_max}], sample_std={self.sample_std}, seed={self.seed}"
        )

    def _generator_for(self, device: torch.device) -> torch.Generator:
        if self.generator is None or (self._own_generator and self.generator.device != device):
            # the layer's own: made (again, after a move to another device) from `seed`
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
            self._own_generator = True
        elif self.generator.device.type != device.type:
            raise ValueError(
                f"noisy batch norm's generator is on {self.generator.device}, its input on "
                f"{device}; pass a generator on the input's device (or none: the layer makes one)"
            )
        return self.generator

    def draw_noise(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """A fresh (scale s, shift m) for input x, each x's shape; sets `last_params`."""
        gen = self._generator_for(x.device)
        c = self.num_features
        low_precision = x.dtype in (torch.float16, torch.bfloat16)
        options = {"device": x.device, "dtype": torch.float32 if low_precision else x.dtype}
        # step level: one (mu, nu) per channel, (C,) each
        mu = (torch.rand(c, generator=gen, **options) * 2 - 1) * self.mean_max
        width = self.scale_max - self.scale_min
        nu = self.scale_min + torch.rand(c, generator=gen, **options) * width
        self.last_params = (mu, nu)
        shape = functional.channel_shape(x)  # (1, C, 1, ...)
        # activation level: (N, C, *) each
        s = nu.view(shape) + self.sample_std * torch.randn(x.shape, generator=gen, **options)
        m = mu.view(shape) + self.sample_std * torch.randn(x.shape, generator=gen, **options)
        return s, m

    def forward_train(self, x: Tensor, momentum: float | Tensor | None) -> Tensor:
        y = super().forward_train(x, momentum)
        held = self.last_noise
        if not (self.hold and held is not None and held[0].shape == x.shape):
            held = self.last_noise = self.draw_noise(x)
        s, m = held
        return (s * y + m).to(y.dtype)


@contextmanager
def held_noise(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Inside the block every `NoisyBatchNorm` of `model` reuses its last noise (`hold`), so
    repeated forwards on one batch differ only through the weights (what an ICS or landscape
    probe needs); the first forward of a layer with no noise yet draws it. Restored on exit."""
    layers = [m for m in model.modules() if isinstance(m, NoisyBatchNorm)]
    before = [m.hold for m in layers]
    for m in layers:
        m.hold = True
    try:
        yield model
    finally:
        for m, hold in zip(layers, before):
            m.hold = hold
