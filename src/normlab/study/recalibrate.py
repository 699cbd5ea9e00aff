"""`recalibrate_runs`: re-estimate a finished BN run's running statistics on i.i.d. training
batches (`normlab.layers.recalibrate_bn`) and store its eval-mode test accuracy afterwards.

The number is stored as the metric `recal_test_acc` at the run's last step, so it is measured
once per run and read by the report like any other metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from normlab.experiments.store import Store
from normlab.study.common import RECAL_TEST_ACC
from normlab.train.config import RunConfig

RECAL_BATCH_SIZE = 256  # i.i.d. batches used to re-estimate the running statistics
RECAL_NORMS = ("batch", "batch_renorm", "ghost_batch")


def _checkpoint_model(out_dir: Path, run_id: str, config: RunConfig, dataset):
    """The trained model of a finished run, rebuilt from its config and checkpoint; None when
    the run has no checkpoint."""
    import torch

    from normlab.models import build_model
    from normlab.train.checkpoint import load_checkpoint
    from normlab.train.engine import model_norm_kwargs

    path = out_dir / "runs" / run_id / "checkpoint.pt"
    if not path.exists():
        return None
    state = load_checkpoint(path, run_id)
    model = build_model(
        config.model, dataset.input_shape, dataset.num_classes, norm=config.norm,
        norm_kwargs=model_norm_kwargs(config), norm_position=config.norm_position,
        activation=config.activation, hidden=config.hidden, init_scale=config.init_scale,
    )
    model.load_state_dict(state["model"])
    return model.to(torch.device("cpu")), int(state["step"]), int(state["epoch"])


def recalibrate_runs(experiment: str, runs: dict[str, RunConfig], out_dir: str | Path) -> int:
    """For each finished BN-family run in `runs` (run_id -> config, runs of the stored
    `experiment`) without `recal_test_acc`: recalibrate, evaluate on the test split in eval
    mode, store. Returns how many were measured."""
    import torch

    from normlab.data import BatchLoader, load_dataset
    from normlab.layers import recalibrate_bn
    from normlab.train.engine import split_holdout
    from normlab.train.evaluate import accuracy_and_loss

    out = Path(out_dir)
    runs = {rid: c for rid, c in runs.items() if c.norm in RECAL_NORMS}
    if not runs:
        return 0
    measured = 0
    with Store.open(out) as store:
        status = store.run_status(list(runs))
        done = set(store.metrics_frame(experiment, names=[RECAL_TEST_ACC])["run_id"])
        datasets: dict[tuple, Any] = {}
        for run_id, config in runs.items():
            if status.get(run_id) != "finished" or run_id in done:
                continue
            key = (config.dataset, config.data_root)
            if key not in datasets:
                datasets[key] = load_dataset(config.dataset, root=config.data_root)
            data = datasets[key]
            loaded = _checkpoint_model(out, run_id, config, data)
            if loaded is None:
                continue
            model, step, epoch = loaded
            train_idx, _ = split_holdout(len(data.train_y), config.holdout_fraction)
            stats = {"mean": data.mean, "std": data.std}
            batches = BatchLoader(data.train_x[train_idx], data.train_y[train_idx], RECAL_BATCH_SIZE,
                                  shuffle=True, drop_last=True, seed=config.seed, **stats)
            recalibrate_bn(model, (x for x, _ in batches))
            test = BatchLoader(data.test_x, data.test_y, 1000, shuffle=False, drop_last=False, **stats)
            with torch.no_grad():
                acc, _ = accuracy_and_loss(model, test)
            store.add_metrics(run_id, [(step, epoch, RECAL_TEST_ACC, acc)])
            measured += 1
    return measured
