"""TensorBoard: an `on_metrics` tracker and an exporter, writing event files without torch.

`TensorBoardTracker(logdir_or_writer)` logs every metric as a scalar at its optimizer step. It
takes a log folder (events are written with tensorboard's own EventFileWriter) or any
SummaryWriter-like object with `add_scalar(tag, value, step)` (torch.utils.tensorboard's,
tensorboardX's). `export_runs(runs, folder)` writes one sub-folder per run with its config as
hparams (TensorBoard's HPARAMS tab) and its metrics as scalars.

Example:
    >>> from normlab.trackers.tensorboard import TensorBoardTracker
    >>> tracker = TensorBoardTracker("tb/run1")
    >>> fit(RunConfig(epochs=2), on_metrics=tracker); tracker.close()
    >>> # tensorboard --logdir tb
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from normlab.trackers import StoredRun, hparam_value, missing_extra

try:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import summary_v2 as hparams_summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
except ImportError as _err:  # an optional extra: the error comes when it is used
    _IMPORT_ERROR: ImportError | None = _err
else:
    _IMPORT_ERROR = None

__all__ = ["EventWriter", "TensorBoardTracker", "export_runs"]


def require() -> None:
    if _IMPORT_ERROR is not None:
        raise missing_extra("TensorBoard", "tensorboard", _IMPORT_ERROR)


class EventWriter:
    """The part of SummaryWriter normlab needs (scalars, hparams), on tensorboard alone."""

    def __init__(self, logdir: str | Path) -> None:
        require()
        Path(logdir).mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(logdir))

    def add_scalar(self, tag: str, value: float, step: int, wall_time: float | None = None):
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))])
        self._event(summary, step, wall_time)

    def add_hparams(self, hparams: Mapping[str, Any], wall_time: float | None = None) -> None:
        """The run's hyper-parameters, shown in TensorBoard's HPARAMS tab."""
        values = {key: hparam_value(value) for key, value in hparams.items()}
        self._event(hparams_summary.hparams_pb(values, start_time_secs=wall_time), 0, wall_time)

    def _event(self, summary: Any, step: int, wall_time: float | None) -> None:
        wall = time.time() if wall_time is None else wall_time
        self._writer.add_event(event_pb2.Event(wall_time=wall, step=int(step), summary=summary))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class TensorBoardTracker:
    """`on_metrics` callback: every value becomes a scalar at its optimizer step.

    Args:
        target: a log folder, or a SummaryWriter-like object with add_scalar(tag, value, step)
            (it stays the caller's to close).
    """

    def __init__(self, target: str | Path | Any) -> None:
        if isinstance(target, (str, Path)):
            self.writer, self._owned = EventWriter(target), True
        elif callable(getattr(target, "add_scalar", None)):
            self.writer, self._owned = target, False
        else:
            raise TypeError(
                f"TensorBoardTracker expected a log folder or a SummaryWriter (an object with "
                f"add_scalar), got {type(target).__name__}"
            )

    def __call__(self, step: int, epoch: int, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        """Flush; close the writer if this tracker opened it."""
        if self._owned:
            self.writer.close()
        elif callable(getattr(self.writer, "flush", None)):
            self.writer.flush()


def export_runs(runs: list[StoredRun], folder: str | Path) -> list[Path]:
    """Write each run to folder/<run.name>/: config as hparams, metrics as scalars at their
    steps. Returns the run folders."""
    require()
    paths = []
    for run in runs:
        path = Path(folder) / run.name
        writer = EventWriter(path)
        wall = run.started_at
        writer.add_hparams({**run.config, **{f"tag.{k}": v for k, v in run.tags.items()}}, wall)
        for step, _epoch, name, value in run.metrics:
            writer.add_scalar(name, value, step, wall)
        writer.close()
        paths.append(path)
    return paths
