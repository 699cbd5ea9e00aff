"""A store filled by a synthetic engine with planted effects (no training: fast).

`fake_fit` has `normlab.train.fit`'s signature and emits the metrics of
`normlab.train.metrics` for the run's config: BN adds a planted +10 accuracy points and
converges faster; every other difference is noise of 0.5 points. The analysis must call the
planted effect supported and must not invent the others.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from normlab.train import metrics as M

PLANTED_BN_GAIN = 0.10
PLANTED_RECAL_GAIN = 0.03
RECAL_METRIC = "recal_test_acc"
NOISE = 0.005
STEPS_PER_EPOCH = 20


def fake_fit(config, *, on_metrics, checkpoint_path=None, **_):
    bn = config.norm in ("batch", "batch_renorm", "ghost_batch")
    rng = np.random.default_rng(config.seed * 1000 + sum(map(ord, config.norm)) + config.batch_size)
    final_acc = 0.6 + (PLANTED_BN_GAIN if bn else 0.0) + rng.normal(0, NOISE)
    rate = 2.0 if bn else 0.7  # BN learns faster: reaches its level in fewer epochs
    step, final = 0, {}

    def emit(s, e, values):
        final.update(values)
        on_metrics(s, e, values)

    emit(0, 0, {M.STEPS_PER_EPOCH: STEPS_PER_EPOCH})
    for epoch in range(1, config.epochs + 1):
        for _ in range(STEPS_PER_EPOCH // 10):
            step += 10
            lr = config.lr * (
                config.schedule.gamma_per_epoch ** (step / STEPS_PER_EPOCH)
                if config.schedule.name == "exponential"
                else 1.0
            )
            # the loss falls with lr up to a point, then climbs (earlier without BN)
            limit = 1.0 if bn else 0.1
            loss = 2.3 - 0.3 * math.log10(max(lr, 1e-6) / 1e-6) / 6 + (50 * (lr - limit) if lr > limit else 0)
            emit(step, epoch, {M.TRAIN_LOSS: loss, M.LR: lr, M.STEP_MS: (1.2 if bn else 1.0) + rng.normal(0, 0.01)})
            if config.probes.grad_norms:
                emit(
                    step,
                    epoch,
                    {
                        M.grad_norm_key("blocks.0.linear.weight"): 0.5 if bn else 0.05,
                        M.grad_norm_key("head.weight"): 1.0,
                    },
                )
            if config.probes.activations:
                center = 0.0 if bn else 0.5 - step / 500
                for p, offset in zip(M.PERCENTILES, (-1.0, 0.0, 1.0)):
                    emit(step, epoch, {M.act_unit_key("blocks.2.act", 0, p): center + offset * (1 if bn else 0.1)})
        acc = final_acc * (1 - math.exp(-rate * epoch))
        train_mode = acc + (0.05 if bn and config.batching == "class_grouped" else 0.0)
        emit(
            step,
            epoch,
            {
                M.EPOCH_TRAIN_LOSS: 1.0,
                M.TEST_LOSS: 1.1,
                M.TEST_ACC: acc,
                M.HOLDOUT_ACC_TRAIN_MODE: train_mode,
                M.HOLDOUT_ACC_EVAL_MODE: acc,
                M.TRAIN_EVAL_GAP: train_mode - acc,
            },
        )
    return SimpleNamespace(status="finished", final=final, steps=step, seconds=0.01)


@pytest.fixture(scope="session")
def sweep_store(tmp_path_factory):
    """(results folder, experiment name) of a sweep run with `fake_fit`: no norm, BN, GroupNorm
    and LayerNorm at 3 seeds (BN's +10 points planted; the others differ by noise only)."""
    from normlab.experiments.config import expand
    from normlab.experiments.runner import run_experiment

    out = tmp_path_factory.mktemp("sweep")
    exp = expand(
        {"epochs": 8, "sweep": {"norm": ["none", "batch", "group", "layer"], "seed": [0, 1, 2]}}, name="planted"
    )
    run_experiment(exp, out, run_fn=fake_fit, progress=False)
    return out, "planted"
