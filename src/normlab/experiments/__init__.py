"""Experiments: config files and sweeps, the SQLite results store, and the sweep executors.

    >>> from normlab.experiments import load_experiment, run_experiment, Store
    >>> exp = load_experiment("configs/mnist1d_norm_batch.yaml", ["epochs=2"])
    >>> summary = run_experiment(exp, "runs", executor="process", workers=2)
    >>> Store.open("runs").runs_frame(exp.name)

The error types are imported here; every other name loads its module on first use, so
`import normlab.experiments.store` (the CLI's `ls`, the analysis layer) loads no more than it
needs.
"""

from typing import TYPE_CHECKING

from normlab._deprecated import moved_module
from normlab._lazy import lazy_exports
from normlab.experiments.errors import ConfigError, ExecutorError, StoreError, UserError

_LAZY = {
    "Experiment": "normlab.experiments.config",
    "PlannedRun": "normlab.experiments.config",
    "RunConfig": "normlab.experiments.config",
    "config_keys": "normlab.experiments.config",
    "expand": "normlab.experiments.config",
    "load_experiment": "normlab.experiments.config",
    "parse_overrides": "normlab.experiments.config",
    "RunOutcome": "normlab.experiments.runner",
    "SweepSummary": "normlab.experiments.runner",
    "run_experiment": "normlab.experiments.runner",
    "SCHEMA_VERSION": "normlab.experiments.store",
    "Store": "normlab.experiments.store",
}
_lazy_getattr, __dir__ = lazy_exports(__name__, _LAZY)
# the old name of ExecutorError, with a DeprecationWarning; the other names load lazily
__getattr__ = moved_module(
    __name__, "normlab.experiments.errors", {"BackendError": "ExecutorError"}, fallback=_lazy_getattr
)

if TYPE_CHECKING:  # what type checkers and IDEs see; _LAZY is what runs
    from normlab.experiments.config import (
        Experiment,
        PlannedRun,
        RunConfig,
        config_keys,
        expand,
        load_experiment,
        parse_overrides,
    )
    from normlab.experiments.runner import RunOutcome, SweepSummary, run_experiment
    from normlab.experiments.store import SCHEMA_VERSION, Store

__all__ = [
    "ConfigError",
    "ExecutorError",
    "Experiment",
    "PlannedRun",
    "RunConfig",
    "RunOutcome",
    "SCHEMA_VERSION",
    "Store",
    "StoreError",
    "SweepSummary",
    "UserError",
    "config_keys",
    "expand",
    "load_experiment",
    "parse_overrides",
    "run_experiment",
]
