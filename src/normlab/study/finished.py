"""What the study's passes after the sweeps share: which finished runs still lack a metric, each
run's data (loaded once per dataset), its model and optimizer rebuilt as the engine builds them,
its training batches, and its checkpoint.

`recalibrate`, `timing` and `mechanisms` each measure finished runs once and store the result
as an ordinary metric; a run that already has that metric is not measured again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from normlab.experiments.execute import CHECKPOINT_NAME
from normlab.experiments.store import Store
from normlab.train.config import RunConfig


def pending(store: Store, experiment: str, runs: dict[str, RunConfig], marker: str) -> list[str]:
    """The runs of `runs` (run_id -> config of the stored `experiment`) that finished and have
    no `marker` metric yet, in the order given."""
    status = store.run_status(list(runs))
    done = set(store.metrics_frame(experiment, names=[marker])["run_id"])
    return [rid for rid in runs if status.get(rid) == "finished" and rid not in done]


def with_data(runs: dict[str, RunConfig], run_ids: list[str]) -> Iterator[tuple[str, RunConfig, Any]]:
    """(run_id, config, dataset) for each id; each dataset is loaded once."""
    from normlab.data import load_dataset

    datasets: dict[tuple, Any] = {}
    for rid in run_ids:
        config = runs[rid]
        key = (config.dataset, config.data_root)
        if key not in datasets:
            datasets[key] = load_dataset(config.dataset, root=config.data_root)
        yield rid, config, datasets[key]


def build_on_cpu(config: RunConfig, dataset) -> tuple[Any, Any]:
    """The run's model and optimizer at step 0, exactly as the engine builds them (same seed, its
    trainable subset, so the run's checkpointed optimizer state fits), on the CPU."""
    import torch

    from normlab.train.build import build_model_for
    from normlab.train.parallel import ProcessContext

    model, optimizer, _ = build_model_for(config, dataset, ProcessContext(), torch.device("cpu"))
    return model, optimizer


def train_batches(config: RunConfig, dataset, batch_size: int):
    """Shuffled batches (seeded by the run's seed) of the run's training split, its held-out
    slice left out, normalized as the engine normalizes them."""
    from normlab.data import BatchLoader, input_stats
    from normlab.train.build import split_holdout

    train_idx, _ = split_holdout(len(dataset.train_y), config.holdout_fraction)
    mean, std = input_stats(dataset, config.input_norm)
    return BatchLoader(
        dataset.train_x[train_idx],
        dataset.train_y[train_idx],
        batch_size,
        shuffle=True,
        drop_last=True,
        seed=config.seed,
        mean=mean,
        std=std,
    )


def checkpoint(out_dir: Path, run_id: str) -> dict[str, Any] | None:
    """The run's verified checkpoint (`normlab.train.checkpoint.load_checkpoint`), or None when
    it has none (e.g. a run that keeps no checkpoint)."""
    from normlab.train.checkpoint import load_checkpoint

    path = Path(out_dir) / "runs" / run_id / CHECKPOINT_NAME
    return load_checkpoint(path, run_id) if path.exists() else None
