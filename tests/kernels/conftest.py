"""Kernel tests: compiled on a CUDA GPU when there is one, else in Triton's CPU interpreter.

Modules that need Triton start with ``pytest.importorskip("triton")``, so they skip cleanly
where it is not installed.

TRITON_INTERPRET must be set before triton is imported (``triton.jit`` reads it when it decorates
a kernel), so it is set here at import time, and only when no GPU is present: on the GPU machine
the same tests run compiled.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"
DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRETING else "cpu"


@pytest.fixture
def device() -> str:
    """'cuda' on a GPU machine, 'cpu' (interpreter) elsewhere."""
    return DEVICE


@pytest.fixture
def poison(monkeypatch):
    """Make every torch.empty/empty_like return NaN-filled memory, so an element a kernel
    forgets to write (output, partial sums, coefficients) shows up as NaN."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def nan_filled(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    def empty(*args, **kwargs):
        return nan_filled(real_empty(*args, **kwargs))

    def empty_like(*args, **kwargs):
        return nan_filled(real_empty_like(*args, **kwargs))

    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch, "empty_like", empty_like)
