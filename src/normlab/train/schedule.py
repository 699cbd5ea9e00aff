"""Learning-rate schedules as a multiplier of the peak lr, stepped once per optimizer step.

`lr_factor` is plain arithmetic and this module loads torch only to build a scheduler, so a
report can recompute a stored run's schedule without torch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from normlab.train.config import ScheduleConfig

if TYPE_CHECKING:
    import torch

ONECYCLE_WARMUP_FRACTION = 0.3
"""One-cycle: share of the steps spent rising (Smith & Topin 2019; torch's pct_start)."""
ONECYCLE_START_FRACTION = 1.0 / 25.0
"""One-cycle: starting lr / peak lr (torch's div_factor = 25)."""


def lr_factor(step: int, schedule: ScheduleConfig, total_steps: int, steps_per_epoch: int) -> float:
    """lr multiplier for optimizer step `step` (0-based) of `total_steps`.

    constant: 1. cosine: linear warm-up over `warmup_steps` (if any), then half a cosine from
    1 to `final_lr_fraction`. warmup_linear: linear warm-up, then linear decay to
    `final_lr_fraction`. onecycle: linear rise from 1/25 over the first 30% of the steps (or
    `warmup_steps` when set), then cosine to `final_lr_fraction`. exponential: multiplied by
    `gamma_per_epoch` each epoch, continuously per step (the learning-rate range test).
    """
    final = schedule.final_lr_fraction
    if schedule.name == "constant":
        return 1.0
    if schedule.name == "exponential":
        return schedule.gamma_per_epoch ** (step / max(steps_per_epoch, 1))
    warmup = schedule.warmup_steps
    start = 0.0
    if schedule.name == "onecycle":
        warmup = warmup or int(ONECYCLE_WARMUP_FRACTION * total_steps)
        start = ONECYCLE_START_FRACTION
    if step < warmup:
        # reach 1 at the end of warm-up: (step + 1) / warmup, never 0 on the first step
        return start + (1.0 - start) * (step + 1) / warmup
    progress = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
    if schedule.name == "warmup_linear":
        return 1.0 + (final - 1.0) * progress
    if schedule.name in ("cosine", "onecycle"):
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(
        f"unknown schedule {schedule.name!r}; expected constant, cosine, warmup_linear, onecycle or exponential"
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: ScheduleConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `lr_factor`; its state_dict (the step count) goes into checkpoints."""
    import torch  # here, not at the top: see the module docstring

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, schedule, total_steps, steps_per_epoch)
    )
