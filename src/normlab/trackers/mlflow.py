"""MLflow: an `on_metrics` tracker and an exporter, through MLflow's tracking client.

`MLflowTracker()` logs every metric at its optimizer step into the active MLflow run (or a
given run id). `export_runs(runs, experiment, tracking_uri)` creates one MLflow run per stored
run, with the config as params, normlab's run id, status and group as tags, and the metrics with
their steps; a run exported before (same normlab run id) is skipped.

Example:
    >>> import mlflow
    >>> from normlab.trackers.mlflow import MLflowTracker
    >>> with mlflow.start_run():
    ...     fit(RunConfig(epochs=2), on_metrics=MLflowTracker())
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from normlab.trackers import StoredRun, missing_extra

try:
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient
except ImportError as _err:  # an optional extra: the error comes when it is used
    _IMPORT_ERROR: ImportError | None = _err
else:
    _IMPORT_ERROR = None

__all__ = ["MLflowTracker", "export_runs"]

# MLflow's limits per log_batch call.
_MAX_PARAMS, _MAX_METRICS = 100, 1000
_STATUS = {"finished": "FINISHED", "failed": "FAILED", "running": "RUNNING", "pending": "SCHEDULED"}


def require() -> None:
    if _IMPORT_ERROR is not None:
        raise missing_extra("MLflow", "mlflow", _IMPORT_ERROR)


class MLflowTracker:
    """`on_metrics` callback: log every value as an MLflow metric at its optimizer step.

    Args:
        run_id: the MLflow run to log into; None: the active run (`mlflow.start_run()`).
        tracking_uri: where that run lives; None: MLflow's configured tracking URI.
    """

    def __init__(self, run_id: str | None = None, tracking_uri: str | None = None) -> None:
        require()
        if run_id is None:
            active = mlflow.active_run()
            if active is None:
                raise ValueError(
                    "MLflowTracker expected an active MLflow run or a run_id, got neither; "
                    "wrap training in `with mlflow.start_run():` or pass run_id=..."
                )
            run_id = active.info.run_id
        self.run_id = run_id
        self.client = MlflowClient(tracking_uri)

    def __call__(self, step: int, epoch: int, values: Mapping[str, float]) -> None:
        now = int(time.time() * 1000)  # ms
        metrics = [Metric(name, float(value), now, int(step)) for name, value in values.items()]
        for i in range(0, len(metrics), _MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + _MAX_METRICS])


def export_runs(runs: list[StoredRun], experiment: str, tracking_uri: str) -> tuple[int, int]:
    """Create one MLflow run per stored run in MLflow experiment `experiment` (made if new).

    Returns (runs written, runs skipped because exported before).
    """
    require()
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    written = skipped = 0
    for run in runs:
        query = f"tags.`normlab.run_id` = '{run.run_id}'"
        if client.search_runs([experiment_id], query, max_results=1):
            skipped += 1
            continue
        start = int((run.started_at or time.time()) * 1000)  # ms
        tags = {"normlab.run_id": run.run_id, **{f"normlab.{k}": v for k, v in run.tags.items()}}
        created = client.create_run(experiment_id, start_time=start, tags=tags, run_name=run.name)
        run_id = created.info.run_id
        params = [Param(key, str(value)) for key, value in run.config.items()]
        for i in range(0, len(params), _MAX_PARAMS):
            client.log_batch(run_id, params=params[i : i + _MAX_PARAMS])
        metrics = [Metric(name, value, start, step) for step, _epoch, name, value in run.metrics]
        for i in range(0, len(metrics), _MAX_METRICS):
            client.log_batch(run_id, metrics=metrics[i : i + _MAX_METRICS])
        client.set_terminated(run_id, _STATUS.get(run.status, "FINISHED"))
        written += 1
    return written, skipped
