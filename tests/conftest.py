"""Suite-wide settings.

One intra-op thread in every test: CI runs 2 pytest workers on 2 cores, and torch's default
(a thread per core in every worker) oversubscribes them; the tensors here are tiny, so threads
only add overhead (measured ~10-30x slower per parity case on a loaded 2-core machine). Set at
import for collection-time work, and around each test in case a test changes it.
"""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
