"""The seed notebook's training loop vs normlab's engine: a thin script over the package.

The benchmark lives in `normlab.bench.training_loop` (also `normlab bench loop`); this script
keeps the commands written in benchmarks/README.md and gpu_suite.sh working, e.g.

    PYTHONPATH=src python benchmarks/training_loop.py --device cpu --samples 5000 --threads 1
    python benchmarks/training_loop.py --device cuda --cuda-graph --out training_loop.json
"""

from normlab.bench.training_loop import main

if __name__ == "__main__":
    raise SystemExit(main())
