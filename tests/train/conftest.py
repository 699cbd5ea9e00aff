"""One intra-op thread per test: CI runs 2 pytest workers on 2 cores, and torch's default
(one thread per core in every worker) oversubscribes them and slows these tests ~10x."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
