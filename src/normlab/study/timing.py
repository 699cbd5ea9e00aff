"""`time_steps`: the step time of the study's timing runs, measured side by side in one process.

The study trains its runs on two worker processes at once, so the `step_ms` windows a run logs
also measure whichever run shares the CPU with it, and which one that is depends on the run
order: a comparison of norms from those windows is confounded. After the sweeps have ended,
this pass rebuilds each finished timing run's model and optimizer exactly as the engine does
(`normlab.train.build.build_model_for`, same seed), and times optimizer steps (forward, loss,
backward, update on one fixed training batch) of the runs of one seed round-robin, in blocks,
the order rotating every block, on one thread: every variant sees the same machine at the same
moments. The median ms per step is stored as the metric `paired_step_ms` on each run, once.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from normlab.experiments.execute import torch_threads
from normlab.experiments.store import Store
from normlab.train.config import RunConfig

PAIRED_STEP_MS = "paired_step_ms"
"""Median wall ms per optimizer step, timed side by side with the seed's other timing runs."""

WARMUP_STEPS = 10  # allocations and first-call costs, not timed
BLOCK_STEPS = 10  # steps per turn of one run in the round-robin
BLOCKS = 8  # turns per run: 80 timed steps


def _step_fn(config: RunConfig, dataset) -> Any:
    """One optimizer step of the run's freshly built model on its first training batch."""
    import torch
    import torch.nn.functional as F

    from normlab.data import BatchLoader
    from normlab.train.build import build_model_for, split_holdout
    from normlab.train.parallel import ProcessContext

    model, optimizer, _ = build_model_for(config, dataset, ProcessContext(), torch.device("cpu"))
    train_idx, _ = split_holdout(len(dataset.train_y), config.holdout_fraction)
    loader = BatchLoader(dataset.train_x[train_idx], dataset.train_y[train_idx], config.batch_size,
                         shuffle=True, drop_last=True, seed=config.seed, mean=dataset.mean, std=dataset.std)
    x, y = next(iter(loader))  # (batch_size, *input_shape), (batch_size,)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def _time_round_robin(steps: dict[str, Any]) -> dict[str, float]:
    """Median ms per step of each function, timed in rotating round-robin blocks."""
    for step in steps.values():
        for _ in range(WARMUP_STEPS):
            step()
    names = list(steps)
    per_step: dict[str, list[float]] = {name: [] for name in names}
    for block in range(BLOCKS):
        shift = block % len(names)
        for name in names[shift:] + names[:shift]:  # no run always goes first
            start = time.perf_counter()
            for _ in range(BLOCK_STEPS):
                steps[name]()
            per_step[name].append((time.perf_counter() - start) * 1000.0 / BLOCK_STEPS)
    return {name: statistics.median(values) for name, values in per_step.items()}


def time_steps(experiment: str, runs: dict[str, RunConfig], out_dir: str | Path) -> int:
    """Time every finished run in `runs` (run_id -> config, runs of the stored `experiment`)
    that has no `paired_step_ms` yet, side by side with the other runs of its seed, and store
    the metric at step 0. Returns how many runs were timed."""
    from normlab.data import load_dataset

    with Store.open(Path(out_dir)) as store:
        status = store.run_status(list(runs))
        done = set(store.metrics_frame(experiment, names=[PAIRED_STEP_MS])["run_id"])
        todo = [rid for rid in runs if status.get(rid) == "finished" and rid not in done]
        by_seed: dict[int, list[str]] = {}
        for rid in todo:
            by_seed.setdefault(runs[rid].seed, []).append(rid)
        datasets: dict[tuple, Any] = {}
        with torch_threads(1):  # as each worker trains
            for seed in sorted(by_seed):
                steps = {}
                for rid in sorted(by_seed[seed], key=lambda r: runs[r].norm):
                    config = runs[rid]
                    key = (config.dataset, config.data_root)
                    if key not in datasets:
                        datasets[key] = load_dataset(config.dataset, root=config.data_root)
                    steps[rid] = _step_fn(config, datasets[key])
                for rid, ms in _time_round_robin(steps).items():
                    store.add_metrics(rid, [(0, 0, PAIRED_STEP_MS, ms)])
    return len(todo)
