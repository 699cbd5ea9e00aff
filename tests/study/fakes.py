"""A stand-in engine for the study's tests: no training, known answers."""

import math
from types import SimpleNamespace

from normlab.train import metrics as M
from normlab.train.config import RunConfig


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


def tiny_configs(checkpoint_every_epochs: int = 1) -> list[RunConfig]:
    """Four real 2-step MNIST-1D runs (none/batch x seeds 0/1) of a 16-wide MLP, for the
    passes that work on finished runs."""
    return [
        RunConfig(
            dataset="mnist1d",
            hidden=[16],
            norm=norm,
            batch_size=32,
            max_steps=2,
            epochs=1,
            seed=seed,
            checkpoint_every_epochs=checkpoint_every_epochs,
        )
        for norm in ("none", "batch")
        for seed in (0, 1)
    ]
