"""A stand-in engine for the study's tests: no training, known answers."""

import math
from types import SimpleNamespace

from normlab.train import metrics as M


def fake_fit(config, *, on_metrics, checkpoint_path=None, **_):
    """Held-out accuracy peaks at lr 3e-3; BN is 5 points better; one evaluation per epoch."""
    peak = 0.7 if config.norm != "none" else 0.65
    acc = peak - 0.05 * abs(math.log10(config.lr / 3e-3)) + 0.001 * (config.seed % 100)
    step = 0
    for epoch in range(1, config.epochs + 1):
        step += 10
        grow = epoch / config.epochs
        on_metrics(
            step,
            epoch,
            {
                M.TRAIN_LOSS: 1.0 / epoch,
                M.LR: config.lr,
                M.STEP_MS: 1.0 + (config.norm != "none"),
                M.EPOCH_TRAIN_LOSS: 1.0 / epoch,
                M.TEST_LOSS: 1.2 / epoch + 0.1,
                M.HOLDOUT_ACC_EVAL_MODE: acc * grow,
                M.HOLDOUT_ACC_TRAIN_MODE: acc * grow + 0.01,
                M.TRAIN_EVAL_GAP: 0.01,
                M.TEST_ACC: acc * grow - 0.01,
            },
        )
    return SimpleNamespace(status="finished", final={M.TEST_ACC: acc}, steps=step, seconds=0.0)
