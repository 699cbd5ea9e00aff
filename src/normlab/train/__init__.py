"""The training engine: `fit(config)` trains one run with its own model and optimizer.

`RunConfig` (config.py) is the single run config; metric names are in `metrics`. Both are
torch-free and imported here; every other name loads its module (and torch) on first use, so
`from normlab.train import RunConfig` stays cheap.
"""

from typing import TYPE_CHECKING

from normlab._lazy import lazy_exports
from normlab.train import metrics
from normlab.train.config import OptimConfig, ProbeConfig, RunConfig, ScheduleConfig

_LAZY = {
    "CheckpointError": "normlab.train.checkpoint",
    "load_checkpoint": "normlab.train.checkpoint",
    "save_checkpoint": "normlab.train.checkpoint",
    "is_main_process": "normlab.train.distributed",
    "launch": "normlab.train.distributed",
    "RunResult": "normlab.train.engine",
    "fit": "normlab.train.engine",
    "accuracy_and_loss": "normlab.train.evaluate",
    "train_mode_accuracy": "normlab.train.evaluate",
    "ForeignOptimizerError": "normlab.train.optim",
    "build_optimizer": "normlab.train.optim",
    "check_optimizer_owns_model": "normlab.train.optim",
    "param_groups": "normlab.train.optim",
    "ActivationProbe": "normlab.train.probes",
    "grad_norms": "normlab.train.probes",
    "tracked_units": "normlab.train.probes",
    "weight_norms": "normlab.train.probes",
    "build_scheduler": "normlab.train.schedule",
    "lr_factor": "normlab.train.schedule",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

if TYPE_CHECKING:  # what type checkers and IDEs see; _LAZY is what runs
    from normlab.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from normlab.train.distributed import is_main_process, launch
    from normlab.train.engine import RunResult, fit
    from normlab.train.evaluate import accuracy_and_loss, train_mode_accuracy
    from normlab.train.optim import ForeignOptimizerError, build_optimizer, check_optimizer_owns_model, param_groups
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
