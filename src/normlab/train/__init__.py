"""The training engine: `fit(config)` trains one run with its own model and optimizer.

`RunConfig` (config.py) is the single run config; metric names are in `metrics`.
"""

from normlab.train import metrics
from normlab.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from normlab.train.config import OptimConfig, ProbeConfig, RunConfig, ScheduleConfig
from normlab.train.distributed import is_main_process, launch
from normlab.train.engine import RunResult, fit
from normlab.train.evaluate import accuracy_and_loss, train_mode_accuracy
from normlab.train.optim import (
    ForeignOptimizerError,
    build_optimizer,
    check_optimizer_owns_model,
    param_groups,
)
from normlab.train.probes import ActivationProbe, grad_norms, tracked_units, weight_norms
from normlab.train.schedule import build_scheduler, lr_factor

__all__ = [
    "ActivationProbe",
    "CheckpointError",
    "ForeignOptimizerError",
    "OptimConfig",
    "ProbeConfig",
    "RunConfig",
    "RunResult",
    "ScheduleConfig",
    "accuracy_and_loss",
    "build_optimizer",
    "build_scheduler",
    "check_optimizer_owns_model",
    "fit",
    "grad_norms",
    "is_main_process",
    "launch",
    "load_checkpoint",
    "lr_factor",
    "metrics",
    "param_groups",
    "save_checkpoint",
    "tracked_units",
    "train_mode_accuracy",
    "weight_norms",
]
