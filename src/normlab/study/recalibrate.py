"""`recalibrate_runs`: re-estimate a finished BN run's running statistics on i.i.d. training
batches (`normlab.layers.recalibrate_bn`) and store its eval-mode test accuracy afterwards.

The number is stored as the metric `recal_test_acc` at the run's last step, so it is measured
once per run and read by the report like any other metric.
"""

from __future__ import annotations

from pathlib import Path

from normlab.experiments.store import Store
from normlab.study.common import RECAL_TEST_ACC
from normlab.study.finished import build_on_cpu, checkpoint, pending, train_batches, with_data
from normlab.train.config import RunConfig

RECAL_BATCH_SIZE = 256  # i.i.d. batches used to re-estimate the running statistics
RECAL_NORMS = ("batch", "batch_renorm", "ghost_batch")


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
            recalibrate_bn(model, (x for x, _ in train_batches(config, data, RECAL_BATCH_SIZE)))
            mean, std = input_stats(data, config.input_norm)
            test = BatchLoader(data.test_x, data.test_y, 1000, shuffle=False, drop_last=False, mean=mean, std=std)
            with torch.no_grad():
                acc, _ = accuracy_and_loss(model, test)
            store.add_metrics(run_id, [(int(state["step"]), int(state["epoch"]), RECAL_TEST_ACC, acc)])
            measured += 1
    return measured
