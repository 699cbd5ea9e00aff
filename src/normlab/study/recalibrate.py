"""`recalibrate_runs`: re-estimate a finished BN run's running statistics on i.i.d. training
batches (`normlab.layers.recalibrate_bn`) and store its eval-mode test accuracy afterwards.

The number is stored as the metric `recal_test_acc` at the run's last step, so it is measured
once per run and read by the report like any other metric. On plain BN runs the same pass first
checks `normlab.layers.fold_batchnorm` on the trained model (before recalibrating): the folded
copy's eval-mode logits and accuracy against the model's on the test split (`fold_*` metrics).
"""

from __future__ import annotations

from pathlib import Path

from normlab.experiments.store import Store
from normlab.study.common import RECAL_TEST_ACC
from normlab.study.finished import build_on_cpu, checkpoint, pending, train_batches, with_data
from normlab.train.config import RunConfig

RECAL_BATCH_SIZE = 256  # i.i.d. batches used to re-estimate the running statistics
RECAL_NORMS = ("batch", "batch_renorm", "ghost_batch")
FOLD_NORMS = ("batch",)  # the others' training-time forward is more than BN: not foldable

FOLD_ACC_CHANGE = "fold_acc_change"
"""Eval-mode test accuracy of the folded copy minus the model's (fraction; 0 when exact)."""
FOLD_LOGIT_ERROR = "fold_logit_error"
"""max |logits(folded) - logits(model)| over the test split, eval mode, float32."""
FOLD_LOGIT_SCALE = "fold_logit_scale"
"""max |logits(model)| over the test split: the scale FOLD_LOGIT_ERROR is read against."""
FOLD_LEFT = "fold_bn_left"
"""BN layers the fold left in place (0: every BN was folded into the layer before it)."""


def fold_check(model, loader) -> dict[str, float]:
    """`fold_batchnorm(model)` against `model`, both in eval mode, on every batch of `loader`:
    the FOLD_* metrics. `model` is left unchanged (the fold works on a copy)."""
    import torch

    from normlab.layers import fold_batchnorm, is_batchnorm

    folded = fold_batchnorm(model.eval())
    error, scale, change, count = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            a, b = model(x), folded(x)  # (B, classes) each
            error = max(error, float((a - b).abs().max()))
            scale = max(scale, float(a.abs().max()))
            change += int((b.argmax(1) == y).sum()) - int((a.argmax(1) == y).sum())
            count += len(y)
    return {
        FOLD_ACC_CHANGE: change / max(count, 1),
        FOLD_LOGIT_ERROR: error,
        FOLD_LOGIT_SCALE: scale,
        FOLD_LEFT: float(sum(is_batchnorm(m) for m in folded.modules())),
    }


def recalibrate_runs(experiment: str, runs: dict[str, RunConfig], out_dir: str | Path) -> int:
    """For each finished BN-family run in `runs` (run_id -> config, runs of the stored
    `experiment`) without `recal_test_acc`: recalibrate, evaluate on the test split in eval
    mode, store. Returns how many were measured."""
    import torch

    from normlab.data import BatchLoader, input_stats
    from normlab.layers import recalibrate_bn
    from normlab.train.evaluate import accuracy_and_loss

    runs = {rid: c for rid, c in runs.items() if c.norm in RECAL_NORMS}
    measured = 0
    with Store.open(out_dir) as store:
        for run_id, config, data in with_data(runs, pending(store, experiment, runs, RECAL_TEST_ACC)):
            state = checkpoint(Path(out_dir), run_id)
            if state is None:
                continue
            model, _ = build_on_cpu(config, data)
            model.load_state_dict(state["model"])
            mean, std = input_stats(data, config.input_norm)
            test = BatchLoader(data.test_x, data.test_y, 1000, shuffle=False, drop_last=False, mean=mean, std=std)
            at = (int(state["step"]), int(state["epoch"]))
            checked = fold_check(model, test) if config.norm in FOLD_NORMS else {}
            recalibrate_bn(model, (x for x, _ in train_batches(config, data, RECAL_BATCH_SIZE)))
            with torch.no_grad():
                acc, _ = accuracy_and_loss(model, test)
            # one write per run: a crash in between never leaves a half-measured run behind
            store.add_metrics(run_id, [(*at, k, v) for k, v in {**checked, RECAL_TEST_ACC: acc}.items()])
            measured += 1
    return measured
