"""Suite-wide settings: one torch thread, and Triton's CPU interpreter where there is no GPU.

One intra-op thread in every test: CI runs 2 pytest workers on 2 cores, and torch's default
(a thread per core in every worker) oversubscribes them; the tensors here are tiny, so threads
only add overhead (measured ~10-30x slower per parity case on a loaded 2-core machine). Set at
import for collection-time work, and around each test in case a test changes it.
"""

import os

import pytest
import torch

torch.set_num_threads(1)

if not torch.cuda.is_available():
    # Triton reads TRITON_INTERPRET when it decorates a kernel, i.e. when normlab.kernels is
    # first imported: set it before any test module can import triton, whichever module a
    # pytest worker happens to run first (tests/kernels/conftest.py alone came too late when a
    # bench or layers test imported the kernels first in the same worker)
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
