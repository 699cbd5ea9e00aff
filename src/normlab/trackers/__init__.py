"""Report normlab's metrics to the trackers people use: TensorBoard and MLflow.

Each tracker is a callable `tracker(step, epoch, values)`, the engine's `on_metrics`, so a
training run reports as it goes: `fit(config, on_metrics=TensorBoardTracker("tb/run1"))`. Each
module also exports a stored experiment's runs (config as hyper-parameters, metrics with their
steps): `normlab export NAME --format tensorboard|mlflow`.

The trackers are optional extras, imported only from their own module:
`normlab.trackers.tensorboard` (pip install 'normlab[tensorboard]') and
`normlab.trackers.mlflow` (pip install 'normlab[mlflow]'). Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from normlab.experiments.store import Store, flatten_config

__all__ = ["StoredRun", "hparam_value", "missing_extra", "stored_runs"]


@dataclass
class StoredRun:
    """One stored run to export: its id, a readable name, flat config and tags, and metrics.

    `metrics` holds (step, epoch, name, value) rows; `started_at` is unix seconds (UTC).
    """

    run_id: str
    name: str
    config: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    status: str = "finished"
    started_at: float | None = None
    metrics: list[tuple[int, int, str, float]] = field(default_factory=list)


def hparam_value(value: Any) -> bool | int | float | str:
    """A config value as a tracker's scalar hyper-parameter (lists and None as text)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def missing_extra(tool: str, extra: str, err: ImportError) -> ImportError:
    """The one clear error for a tracker whose package is not installed."""
    return ImportError(
        f"normlab's {tool} tracker needs the {tool} package ({err}); install it with pip install 'normlab[{extra}]'"
    )


def stored_runs(store: Store, experiment: str) -> list[StoredRun]:
    """Every run of a stored experiment (each once, in plan order) with its flat config, its
    status and group(s) as tags, and all its metrics."""
    runs: dict[str, StoredRun] = {}
    for row in store.run_rows(experiment):
        run = runs.get(row["run_id"])
        if run is not None:  # a run in two groups: one run, both groups named
            run.tags["group"] += f",{row['grp']}"
            continue
        config = flatten_config(row["config"])
        runs[row["run_id"]] = StoredRun(
            run_id=row["run_id"],
            name=f"{row['run_id'][:12]}-{config.get('norm', 'run')}",
            config=config,
            tags={"experiment": experiment, "group": row["grp"] or "", "status": row["status"]},
            status=row["status"],
            started_at=row["started_at"],
        )
    frame = store.metrics_frame(experiment)
    for run_id, step, epoch, name, value in frame.itertuples(index=False, name=None):
        runs[run_id].metrics.append((int(step), int(epoch), str(name), float(value)))
    return list(runs.values())
