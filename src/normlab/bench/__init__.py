"""Benchmarks that ship with normlab: each prints a table and writes JSON with its provenance.

- `training_loop`: the seed notebook's loop vs normlab's engine (`normlab bench loop`).
- `layers_cpu`: the reference BatchNorm vs torch's CPU kernel (`normlab bench layers`).
- `kernels`: the Triton BatchNorm kernels vs torch on a GPU, split by job (timing, tuning,
  resources; `normlab bench kernels`). Not imported here: it loads Triton, which a dry run
  must first switch to its interpreter.
- `common`: provenance, device and thread handling, the table, JSON writing.

Speed targets live here and in benchmarks/README.md, never in timed tests; the scripts in
benchmarks/ are thin command lines over these modules.

Example:
    >>> from normlab.bench import bench_layers_cpu
    >>> result = bench_layers_cpu(threads=1, repeats=2, quick=True, out="layers.json")
"""

from normlab.bench.layers_cpu import bench_layers_cpu
from normlab.bench.training_loop import bench_training_loop

__all__ = ["bench_layers_cpu", "bench_training_loop"]
