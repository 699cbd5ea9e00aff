"""One training step (forward, loss, backward, clipping, optimizer) replayed as a CUDA graph.

Why: the seed's MLP at batch 64 is ~40 tiny kernels per step. Eager PyTorch spends ~1-2 ms of
host time per step launching them (measured on an H100: 0.9 ms/step without BN, 1.9 ms with
it, see benchmarks/README.md), while the GPU needs ~0.1 ms to run them. A captured graph
launches them all with one call, so the step becomes GPU-bound.

How (the "whole-network capture" recipe of torch's CUDA semantics notes):
- the first `warmup_steps` steps run eagerly on a side stream: they are real training steps
  (the batches are not wasted) and they create what capture must not allocate for the first
  time (the optimizer's state, cuBLAS workspaces, autograd's stream bookkeeping);
- the next step is captured: it records kernels, runs nothing;
- every step from then on copies its inputs into the captured input tensors and replays.
  The engine's inputs are the batch's sample indices and augmentation parameters, and the
  captured step gathers and normalizes the batch itself (`BatchLoader.make_batch`), so per
  step the host copies two small tensors and launches one graph.
The numbers equal the eager loop's (same kernels in the same order), provided what changes
per step lives in device tensors the graph reads: the batch (copied in), the learning rate
(a device tensor the scheduler fills, see `build_optimizer(..., capturable=True)`) and the
optimizer's step counts (capturable optimizers keep them on the device).

Capture can fail (a layer that reads a value on the host, e.g. BatchNorm with momentum=None,
whose average weight is 1 / num_batches_tracked). Nothing ran during the failed capture, so the
step falls back to the eager path with a warning: the run goes on with identical numbers,
only slower.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

StepFn = Callable[..., torch.Tensor]
"""`step(*inputs) -> loss`: one full training step from tensors (or None); `loss` is 0-d."""
Capture = Callable[[Callable[[], torch.Tensor]], tuple[Callable[[], None], torch.Tensor]]
"""`capture(fn) -> (replay, output)`: records `fn` without running it."""

WARMUP_STEPS = 3
"""Eager steps before capture (torch's recipe uses a few; 1 creates the optimizer state)."""


def capture_cuda_graph(fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
    """Record `fn` into a CUDA graph; returns (replay, the output tensor replay rewrites)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = fn()
    return graph.replay, output


@contextlib.contextmanager
def side_stream() -> AbstractContextManager[None]:
    """Run the body on a fresh CUDA stream ordered after, and before, the current one.

    torch's recipe warms up on a side stream so that autograd and the caching allocator see
    the same stream arrangement as during capture (which itself runs on a side stream).
    """
    current = torch.cuda.current_stream()
    stream = torch.cuda.Stream()
    stream.wait_stream(current)
    with torch.cuda.stream(stream):
        yield
    current.wait_stream(stream)


class GraphedStep:
    """Call like the step it wraps: `loss = graphed(*inputs)`; replays a CUDA graph once warm.

    Args:
        step: the eager step `step(*inputs) -> loss` (0-d tensor); each input is a tensor or
            None. It must read everything that changes between steps from tensors (see the
            module docstring).
        warmup_steps: eager steps before the capture.
        capture: how to record a step; default `capture_cuda_graph`. Tests pass a stand-in
            that "records" the function and re-runs it on replay.
        warmup_context: context of the eager warm-up steps; default `side_stream`.

    Shapes: every input keeps the shape and dtype it had at capture (the engine's loader drops
    the last partial batch), and None stays None; anything else is an error, never a silent
    re-capture.

    Attributes:
        captured: True once steps are replayed.
        fallback_reason: why capture failed (the steps then stay eager), else None.

    Example:
        >>> graphed = GraphedStep(lambda idx, params: train_step(*loader.make_batch(idx, params)))
        >>> for idx, params in loader.index_batches():
        ...     loss = graphed(idx, params)  # eager for 3 steps, then one replay per step
    """

    def __init__(
        self,
        step: StepFn,
        *,
        warmup_steps: int = WARMUP_STEPS,
        capture: Capture | None = None,
        warmup_context: Callable[[], AbstractContextManager] | None = None,
    ) -> None:
        if warmup_steps < 1:
            raise ValueError(
                f"warmup_steps must be >= 1 (the optimizer state must exist before capture), got {warmup_steps}"
            )
        self.step, self.warmup_steps = step, warmup_steps
        self._capture = capture or capture_cuda_graph
        self._warmup_context = warmup_context or side_stream
        self.calls = 0
        self.captured = False
        self.fallback_reason: str | None = None
        self._replay: Callable[[], None] | None = None
        self._inputs: tuple[torch.Tensor | None, ...] = ()
        self._loss: torch.Tensor | None = None

    def __call__(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        self.calls += 1
        if self.fallback_reason is not None:
            return self._eager(inputs)
        if not self.captured and self.calls <= self.warmup_steps:
            with self._warmup_context():
                return self._eager(inputs)
        if not self.captured:
            self._try_capture(inputs)
            if not self.captured:
                return self._eager(inputs)
        self._check_inputs(inputs)
        for static, new in zip(self._inputs, inputs):
            if static is not None:
                static.copy_(new)
        self._replay()
        # the graph's own output buffer: the next replay overwrites it, so a caller must use
        # it (the engine adds it to its loss window, on the same stream) before the next call
        return self._loss

    def _eager(self, inputs: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        # capturable optimizers warn when stepped outside a capture; here that is by design
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            return self.step(*inputs)

    def _try_capture(self, inputs: tuple[torch.Tensor | None, ...]) -> None:
        # the captured inputs: fresh tensors owned by the graph, refilled before each replay
        self._inputs = tuple(None if t is None else t.clone() for t in inputs)
        try:
            self._replay, self._loss = self._capture(lambda: self.step(*self._inputs))
        except RuntimeError as err:  # e.g. "operation not permitted when stream is capturing"
            self.fallback_reason = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            self._inputs = ()
            warnings.warn(
                f"cuda_graph: the training step could not be captured ({self.fallback_reason}); "
                f"the run continues eagerly with the same numbers, only slower. A layer that "
                f"reads a tensor on the host (e.g. BatchNorm with momentum=None) prevents "
                f"capture; set cuda_graph=false to silence this",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        self.captured = True

    def _check_inputs(self, inputs: tuple[torch.Tensor | None, ...]) -> None:
        def describe(tensors):
            return ", ".join("None" if t is None else f"{tuple(t.shape)} {t.dtype}" for t in tensors)

        same = len(inputs) == len(self._inputs) and all(
            (a is None) == (b is None) and (a is None or (a.shape == b.shape and a.dtype == b.dtype))
            for a, b in zip(self._inputs, inputs)
        )
        if not same:
            raise ValueError(
                f"a CUDA-graphed step replays the inputs it captured: {describe(self._inputs)}; "
                f"got {describe(inputs)}; keep drop_last=True (every batch the same size) or "
                f"set cuda_graph=false"
            )
