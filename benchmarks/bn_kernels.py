"""normlab's Triton BatchNorm vs torch on a CUDA GPU: a thin script over the package.

The benchmark lives in `normlab.bench.kernels` (also `normlab bench kernels`); this script runs
where typer is not installed (the GPU image) and keeps the commands of benchmarks/README.md:

    PYTHONPATH=src python benchmarks/bn_kernels.py --out bn_kernels.json [--quick] [--v4]
        [--sweep] [--budget-s SECONDS]
    PYTHONPATH=src python benchmarks/bn_kernels.py --dry-run [--v4] [--sweep]   # CPU, interpreter
"""

from normlab.bench.kernels.run import main

if __name__ == "__main__":
    raise SystemExit(main())
