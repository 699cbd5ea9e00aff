"""The one writer of a sweep's results: it applies the executors' events (see
`normlab.experiments.execute`) to the store and the progress bar, in the parent process only."""

from __future__ import annotations

import json
from pathlib import Path

from normlab.experiments.errors import ResourceError
from normlab.experiments.execute import CHECKPOINT_NAME, RunTask
from normlab.experiments.paths import safe_dir, write_atomic
from normlab.experiments.progress import ProgressView
from normlab.experiments.store import Store


class Writer:
    """Applies executor events to the store and the progress bar (parent process only)."""

    def __init__(
        self,
        store: Store,
        out_dir: Path,
        progress: ProgressView,
        labels: dict[str, str],
        fingerprints: dict[str, str] | None = None,
    ) -> None:
        self.store, self.out_dir, self.progress, self.labels = store, out_dir, progress, labels
        self.fingerprints = fingerprints or {}  # run_id -> fingerprint of its data
        self.running: set[str] = set()
        self.ended: dict[str, str] = {}

    def dispatch(self, task: RunTask) -> None:
        """A run is about to be handed to an executor: write its config next to its checkpoint."""
        run_dir = safe_dir(self.out_dir, "runs", Path(task.run_dir).name)  # no planted symlink
        write_atomic(run_dir / "config.json", json.dumps(task.config, indent=2, sort_keys=True))

    def has_ended(self, run_id: str) -> bool:
        return run_id in self.ended

    def handle(self, event: tuple) -> None:
        kind, run_id = event[0], event[1]
        if kind == "start":
            _, _, env, resumed, resume_step = event
            env = {**env, "data_fingerprint": self.fingerprints.get(run_id)}
            self.store.mark_running(run_id, env, fresh=not resumed, keep_through=resume_step)
            self.running.add(run_id)
            self.ended.pop(run_id, None)  # a Ray retry starts the run again
            self.progress.started(run_id, self.labels.get(run_id, run_id))
        elif kind == "metrics":
            self.store.add_metrics(run_id, event[2])
            self.progress.metrics(run_id, event[2])
        elif kind == "end":
            _, _, status, final, steps, seconds, error = event
            self.store.finish_run(run_id, status, final=final, steps=steps, seconds=seconds, error=error)
            checkpoint = self.out_dir / "runs" / run_id / CHECKPOINT_NAME
            if checkpoint.exists():
                self.store.add_artifact(run_id, "checkpoint", str(checkpoint.relative_to(self.out_dir)))
            self.running.discard(run_id)
            self.ended[run_id] = status
            self.progress.ended(run_id, status)
        elif kind == "abort":  # the machine, not the run, failed: stop the sweep, resumable
            self.interrupt(run_id, event[2])
            raise ResourceError(event[2])
        else:
            raise ValueError(f"unknown executor event {kind!r}")

    def interrupt(self, run_id: str, reason: str) -> None:
        """A run stopped without an end event: back to 'queued', resumable from its checkpoint."""
        self.store.finish_run(run_id, "queued", error=reason)
        self.running.discard(run_id)
        self.ended[run_id] = "queued"
        self.progress.ended(run_id, "interrupted")


__all__ = ["Writer"]
