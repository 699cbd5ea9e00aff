"""`normlab export`: an experiment's runs and metrics as CSV or Parquet tables, or as one
TensorBoard / MLflow run per stored run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer

from normlab.experiments.errors import ConfigError
from normlab.experiments.paths import open_new, safe_dir
from normlab.experiments.store import Store
from normlab.trackers import stored_runs

FORMATS = ("csv", "parquet", "tensorboard", "mlflow")


def export(experiment: str, out: Path, fmt: str, dest: str | None) -> None:
    """Write the tables (csv, parquet) or the tracker runs (tensorboard, mlflow); print where."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt in ("tensorboard", "mlflow"):
        _export_to_tracker(experiment, out, fmt, dest)
        return
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError("--format parquet needs pyarrow: `pip install 'normlab[parquet]'`, or use --format csv")
    with Store.open(out, create=False) as store:
        frames = {"runs": store.runs_frame(experiment), "metrics": store.metrics_frame(experiment)}
    if dest is not None:  # the user's explicit folder
        folder = Path(dest)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = safe_dir(out, "exports")  # inside --out, not through a planted link
    for kind, frame in frames.items():
        path = folder / f"{experiment}_{kind}.{fmt}"  # the store checked the name: one file name
        with open_new(path, "w" if fmt == "csv" else "wb") as handle:
            if fmt == "csv":
                frame.to_csv(handle, index=False)
            else:
                frame.to_parquet(handle, index=False)
        typer.echo(str(path))


def _export_to_tracker(experiment: str, out: Path, fmt: str, dest: str | None) -> None:
    """One tracker run per stored run; a tracker that is not installed is a ConfigError."""
    try:
        _write_tracker_runs(experiment, out, fmt, dest)
    except ImportError as err:
        raise ConfigError(f"--format {fmt}: {err}") from None


def _write_tracker_runs(experiment: str, out: Path, fmt: str, dest: str | None) -> None:
    # Imported here, the tracker that was asked for only: each is an optional extra, and
    # importing MLflow takes seconds.
    if fmt == "tensorboard":
        from normlab.trackers import tensorboard as tracker
    else:
        from normlab.trackers import mlflow as tracker
    tracker.require()
    with Store.open(out, create=False) as store:
        runs = stored_runs(store, experiment)
    if fmt == "tensorboard":
        # inside --out (not through a planted link) unless the user named a folder
        folder = (
            Path(dest) / "tensorboard" / experiment if dest else safe_dir(out, "exports", "tensorboard", experiment)
        )
        tracker.export_runs(runs, folder)
        typer.echo(f"{len(runs)} run(s) -> {folder}  (view: tensorboard --logdir {folder})")
        return
    if dest and "://" in dest:
        uri = dest
    else:
        folder = Path(dest) if dest else safe_dir(out, "exports")
        folder.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
    written, skipped = tracker.export_runs(runs, experiment, uri)
    typer.echo(
        f"{written} run(s) -> MLflow experiment {experiment!r} at {uri}"
        + (f" ({skipped} exported before, skipped)" if skipped else "")
        + f"  (view: mlflow ui --backend-store-uri {uri})"
    )


__all__ = ["FORMATS", "export"]
