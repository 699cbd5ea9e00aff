"""Deprecated module path: the sweep executors are in `normlab.experiments.executors`.

Each old name still resolves to its new one, with a DeprecationWarning.
"""

from normlab._deprecated import moved_module

__getattr__ = moved_module(
    __name__,
    "normlab.experiments.executors",
    {
        "BACKENDS": "EXECUTORS",
        "import_ray": "import_ray",
        "run_local": "run_local",
        "run_process": "run_process",
        "run_ray": "run_ray",
    },
)
