"""Executing one run, in whatever process a backend puts it (in-process, a worker, a Ray task).

The executor never touches the store: it reports what happens as small picklable events that
the runner's parent process (the single writer) applies:

    ("start",   run_id, env: dict, resumed: bool)
    ("metrics", run_id, rows: list[(step, epoch, name, value)])
    ("end",     run_id, status, final: dict | None, steps, seconds, error: str | None)

A run function has the engine's signature, `run_fn(config, *, on_metrics, checkpoint_path)`,
and returns an object with `status` ("finished"|"diverged"), `final`, `steps`, `seconds`
(`normlab.train.fit`'s RunResult). Anything it raises becomes a 'failed' end event carrying
the traceback; nothing escapes except KeyboardInterrupt/SystemExit.
"""

from __future__ import annotations

import signal
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normlab.experiments.errors import ConfigError
from normlab.provenance import environment

Event = tuple
CHECKPOINT_NAME = "checkpoint.pt"
# Metrics are sent in batches at most this often (s): one queue message / transaction per
# batch instead of per optimizer step. A kill loses at most this much, re-emitted on resume.
FLUSH_SECONDS = 0.25


@dataclass(frozen=True)
class RunTask:
    """What an executor needs: the run's id, its resolved config and its folder."""

    run_id: str
    config: dict[str, Any]
    run_dir: str

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.run_dir) / CHECKPOINT_NAME


def default_run_fn(config: Any, *, on_metrics: Callable, checkpoint_path: Path) -> Any:
    """The engine: `normlab.train.fit` (imported here so workers load torch only when needed).

    A data-parallel run (`nproc` > 1, or this process started by torchrun) goes through
    `normlab.train.distributed.launch`, which trains it on every process and relays rank 0's
    metrics here: to the store it is one run like any other.
    """
    from normlab.train.distributed import in_torchrun, launch

    if config.nproc > 1 or in_torchrun():
        return launch(config, on_metrics=on_metrics, checkpoint_path=checkpoint_path)
    from normlab.train import fit

    return fit(config, on_metrics=on_metrics, checkpoint_path=checkpoint_path)


class _MetricBuffer:
    """Collects on_metrics calls and emits them in batches (see FLUSH_SECONDS)."""

    def __init__(self, run_id: str, emit: Callable[[Event], None]) -> None:
        self.run_id, self.emit = run_id, emit
        self.rows: list[tuple[int, int, str, float]] = []
        self.last_flush = time.monotonic()

    def __call__(self, step: int, epoch: int, values: dict[str, float]) -> None:
        # None (a metric with no value this time) is stored as NaN: missing, never dropped.
        self.rows.extend(
            (int(step), int(epoch), str(k), float("nan") if v is None else float(v)) for k, v in values.items()
        )
        if time.monotonic() - self.last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.emit(("metrics", self.run_id, self.rows))
            self.rows = []
        self.last_flush = time.monotonic()


def execute_run(task: RunTask, emit: Callable[[Event], None], run_fn: Callable | None = None) -> None:
    """Run one task to its end event; resumes from `<run_dir>/checkpoint.pt` when it exists."""
    from normlab.train.config import RunConfig

    run_fn = run_fn or default_run_fn
    config = RunConfig.model_validate(task.config)
    Path(task.run_dir).mkdir(parents=True, exist_ok=True)
    resumed = task.checkpoint_path.exists()
    emit(("start", task.run_id, environment(config.device), resumed))
    buffer = _MetricBuffer(task.run_id, emit)
    start = time.perf_counter()
    try:
        result = run_fn(config, on_metrics=buffer, checkpoint_path=task.checkpoint_path)
        status = getattr(result, "status", None)
        if status not in ("finished", "diverged"):
            raise RuntimeError(f"run function returned status {status!r}; expected 'finished' or 'diverged'")
        final = {str(k): float(v) for k, v in dict(result.final).items()}
        steps, seconds = int(result.steps), float(result.seconds)
    except Exception:
        buffer.flush()
        emit(("end", task.run_id, "failed", None, None, time.perf_counter() - start, traceback.format_exc()))
        return
    buffer.flush()
    emit(("end", task.run_id, status, final, steps, seconds, None))


DEFAULT_THREADS = 1
"""torch intra-op threads per run unless asked otherwise, on every backend: small models run
several times faster on one thread than with a thread per core (measured on a 2-core CPU), and
on CPU the last float digits depend on the count, so one default keeps a config's numbers the
same whichever backend trains it."""


def check_thread_count(threads: int) -> None:
    """`threads` of a run: a count >= 0 (0 keeps torch's setting); else ConfigError."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ConfigError(f"--threads: expected a number of threads >= 0 (0 keeps torch's "
                          f"setting), got {threads!r}")


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with `threads` intra-op threads (None or 0: torch's setting, unchanged),
    then restore the count, also when the body raises."""
    if not threads or threads < 0:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def worker_main(worker_id: int, tasks: Any, events: Any, run_fn: Callable | None,
                threads: int = DEFAULT_THREADS) -> None:
    """A process-pool worker: execute tasks from its own queue until it receives None.

    `threads` > 0 sets torch's intra-op threads (0: torch's one per core), so N workers share
    the cores instead of each starting one thread per core (oversubscription makes small models
    several times slower).
    """
    # Ctrl-C reaches the whole process group: the parent decides (it marks the runs
    # resumable and terminates the workers), so workers do not die mid-write on their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with torch_threads(threads):
        while True:
            task = tasks.get()
            if task is None:
                return
            execute_run(task, events.put, run_fn)
            events.put(("idle", worker_id))


def ray_task(task: RunTask, queue: Any, run_fn: Callable | None) -> str:
    """A Ray task: execute one run, streaming events through a ray.util.queue.Queue."""
    execute_run(task, queue.put, run_fn)
    return task.run_id


__all__ = ["RunTask", "default_run_fn", "execute_run"]
