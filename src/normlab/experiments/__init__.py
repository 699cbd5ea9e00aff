"""Experiments: config files and sweeps, the SQLite results store, and the runner backends.

    >>> from normlab.experiments import load_experiment, run_experiment, Store
    >>> exp = load_experiment("configs/mnist1d_norm_batch.yaml", ["epochs=2"])
    >>> summary = run_experiment(exp, "runs", backend="process", workers=2)
    >>> Store.open("runs").runs_frame(exp.name)
"""

from normlab.experiments.config import (
    Experiment,
    PlannedRun,
    RunConfig,
    config_keys,
    expand,
    load_experiment,
    parse_overrides,
)
from normlab.experiments.errors import BackendError, ConfigError, StoreError, UserError
from normlab.experiments.runner import RunOutcome, SweepSummary, run_experiment
from normlab.experiments.store import SCHEMA_VERSION, Store

__all__ = [
    "BackendError",
    "ConfigError",
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
