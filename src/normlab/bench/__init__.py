"""Benchmarks that ship with normlab: each prints a table and writes JSON with its provenance.

- `training_loop`: the seed notebook's loop vs normlab's engine (`normlab bench loop`).
- `layers_cpu`: the reference BatchNorm vs torch's CPU kernel (`normlab bench layers`).
- `common`: provenance, device and thread handling, the table, JSON writing.

Speed targets live here (and in benchmarks/), never in timed tests. The Triton kernel
benchmark stays in `benchmarks/bn_kernels.py` (GPU only).

Example:
    >>> from normlab.bench import bench_layers_cpu
    >>> result = bench_layers_cpu(threads=1, repeats=2, quick=True, out="layers.json")
"""

from normlab.bench.layers_cpu import bench_layers_cpu
from normlab.bench.training_loop import bench_training_loop

__all__ = ["bench_layers_cpu", "bench_training_loop"]
