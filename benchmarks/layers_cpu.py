"""BatchNorm forward+backward on CPU, reference vs torch: a thin script over the package.

The benchmark lives in `normlab.bench.layers_cpu` (also `normlab bench layers`); this script
keeps the commands written in benchmarks/README.md working, e.g.

    PYTHONPATH=src python benchmarks/layers_cpu.py --threads 1 [--quick] [--out FILE]
"""

from normlab.bench.layers_cpu import main

if __name__ == "__main__":
    raise SystemExit(main())
