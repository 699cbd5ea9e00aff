"""Suite-wide settings.

One intra-op thread per test process: CI runs 2 pytest workers on 2 cores, and torch's default
(a thread per core in every worker) oversubscribes them; the tensors here are tiny, so threads
only add overhead (measured ~10-30x slower per parity case on a loaded 2-core machine).
"""

import torch

torch.set_num_threads(1)
