"""Registers, spills and shared memory of the kernel benchmark's plans, compiled offline for an
H100 (sm_90) on CPU: a thin script over `normlab.bench.kernels.resources`.

    PYTHONPATH=src python benchmarks/bn_kernels_resources.py [--quick] [--out FILE]
"""

from normlab.bench.kernels.run import main

if __name__ == "__main__":
    raise SystemExit(main(job="resources"))
