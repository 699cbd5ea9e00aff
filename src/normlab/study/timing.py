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
from normlab.study.finished import build_on_cpu, pending, train_batches, with_data
from normlab.train.config import RunConfig

PAIRED_STEP_MS = "paired_step_ms"
"""Median wall ms per optimizer step, timed side by side with the seed's other timing runs."""

WARMUP_STEPS = 10  # allocations and first-call costs, not timed
BLOCK_STEPS = 10  # steps per turn of one run in the round-robin
BLOCKS = 8  # turns per run: 80 timed steps


def _step_fn(config: RunConfig, dataset) -> Any:
    """One optimizer step of the run's freshly built model on its first training batch."""
    import torch.nn.functional as F

    model, optimizer = build_on_cpu(config, dataset)
    x, y = next(iter(train_batches(config, dataset, config.batch_size)))  # (batch, *input_shape), (batch,)
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
    with Store.open(Path(out_dir)) as store:
        todo = pending(store, experiment, runs, PAIRED_STEP_MS)
        by_seed: dict[int, list[tuple[str, RunConfig, Any]]] = {}
        ordered = sorted(todo, key=lambda rid: (runs[rid].seed, runs[rid].norm))
        for rid, config, data in with_data(runs, ordered):
            by_seed.setdefault(config.seed, []).append((rid, config, data))
        with torch_threads(1):  # as each worker trains
            for seed in sorted(by_seed):
                steps = {rid: _step_fn(config, data) for rid, config, data in by_seed[seed]}
                for rid, ms in _time_round_robin(steps).items():
                    store.add_metrics(rid, [(0, 0, PAIRED_STEP_MS, ms)])
    return len(todo)
