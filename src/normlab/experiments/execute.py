"""Executing one run, in whatever process an executor puts it (in-process, a worker, a Ray task).

The executor never touches the store: it reports what happens as small picklable events that
the runner's parent process (the single writer) applies:

    ("start",   run_id, env: dict, resumed: bool, resume_step: int | None)
    ("metrics", run_id, rows: list[(step, epoch, name, value)])
    ("end",     run_id, status, final: dict | None, steps, seconds, error: str | None)
    ("abort",   run_id, message)   the disk is full: the sweep stops, the run stays resumable

Metrics are exactly-once across crashes: before the engine writes a checkpoint it calls
`on_metrics.commit()`, which returns only once the parent has stored every row emitted so far
(a `sync` callable waits for the parent's acknowledgement where the parent is another
process); a resumed run's start event carries its checkpoint's step, and the parent drops the
rows the killed attempt stored past it (the resumed run emits them again).

A run function has the engine's signature, `run_fn(config, *, on_metrics, checkpoint_path)`,
and returns an object with `status` ("finished"|"diverged"), `final`, `steps`, `seconds`
(`normlab.train.fit`'s RunResult). Anything it raises becomes a 'failed' end event carrying
the traceback; nothing escapes except KeyboardInterrupt/SystemExit.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import queue as queue_module
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normlab.experiments.errors import ConfigError
from normlab.provenance import environment
from normlab.train.config import RunConfig

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
    """Collects on_metrics calls and emits them in batches (see FLUSH_SECONDS); `commit()`
    emits the rest and, with `sync`, waits until the parent has stored them."""

    def __init__(self, run_id: str, emit: Callable[[Event], None], sync: Callable[[], None] | None = None) -> None:
        self.run_id, self.emit, self.sync = run_id, emit, sync
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

    def commit(self) -> None:
        """Every row emitted so far is in the store when this returns (the engine calls it
        before writing a checkpoint, so a checkpoint is never ahead of the stored metrics)."""
        self.flush()
        if self.sync is not None:
            self.sync()


def resume_step(checkpoint_path: Path) -> int | None:
    """The step a run resumes from: its checkpoint's, read from the header alone; None when
    there is no checkpoint or no readable step (the engine then reports the problem)."""
    if not checkpoint_path.exists():
        return None
    from normlab.train.checkpoint import CheckpointError, read_header

    try:
        step = read_header(checkpoint_path).get("step")
    except CheckpointError:
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def execute_run(
    task: RunTask, emit: Callable[[Event], None], run_fn: Callable | None = None, sync: Callable[[], None] | None = None
) -> None:
    """Run one task to its end event; resumes from `<run_dir>/checkpoint.pt` when it exists.

    `sync()` returns once the parent has applied every event emitted before it (None: `emit`
    applies events before it returns, as in-process).
    """
    run_fn = run_fn or default_run_fn
    config = RunConfig.model_validate(task.config)
    Path(task.run_dir).mkdir(parents=True, exist_ok=True)
    resumed = task.checkpoint_path.exists()
    emit(("start", task.run_id, environment(config.device), resumed, resume_step(task.checkpoint_path)))
    buffer = _MetricBuffer(task.run_id, emit, sync)
    start = time.perf_counter()
    try:
        result = run_fn(config, on_metrics=buffer, checkpoint_path=task.checkpoint_path)
        status = getattr(result, "status", None)
        if status not in ("finished", "diverged"):
            raise RuntimeError(f"run function returned status {status!r}; expected 'finished' or 'diverged'")
        final = {str(k): float(v) for k, v in dict(result.final).items()}
        steps, seconds = int(result.steps), float(result.seconds)
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # not the run's fault: stop the sweep with one message, the run stays resumable
            message = (
                f"no space left on the device while run {task.run_id} wrote "
                f"{exc.filename or 'a file'!s} ({exc.strerror}); free disk space and run the "
                "same command again: the run resumes from its last checkpoint"
            )
            emit(("abort", task.run_id, message))
            return
        buffer.flush()
        emit(("end", task.run_id, "failed", None, None, time.perf_counter() - start, traceback.format_exc()))
        return
    buffer.flush()
    emit(("end", task.run_id, status, final, steps, seconds, None))


DEFAULT_THREADS = 1
"""torch intra-op threads per run unless asked otherwise, on every executor: small models run
several times faster on one thread than with a thread per core (measured on a 2-core CPU), and
on CPU the last float digits depend on the count, so one default keeps a config's numbers the
same whichever executor trains it."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def check_thread_count(threads: int) -> None:
    """`threads` of a run: a count from 0 (keeps torch's setting) to the cores this process
    may use; else ConfigError (more threads than cores only slows training down)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ConfigError(f"--threads: expected a number of threads >= 0 (0 keeps torch's setting), got {threads!r}")
    if threads > usable_cores():
        raise ConfigError(
            f"--threads: this machine lets normlab use {usable_cores()} CPU cores, "
            f"got {threads} threads; give at most {usable_cores()} (0 keeps torch's setting)"
        )


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


PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_CHECK_SECONDS = 1.0


def die_with_parent(parent_pid: int) -> None:
    """End this process when `parent_pid` (its parent) dies, SIGKILL included.

    Linux: the kernel sends SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG). Everywhere:
    a daemon thread checks every PARENT_CHECK_SECONDS that the parent is still the parent
    (an orphan is re-parented). Either way a worker never trains on, unseen, after its sweep.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    if os.getppid() != parent_pid:  # the parent died before the prctl above
        os._exit(1)
    threading.Thread(target=watch, name="normlab-parent-watch", daemon=True).start()


def wait_for_ack(acks: Any, token: int, parent_pid: int) -> None:
    """Block until the parent puts `token` on `acks` (it has stored what came before)."""
    while True:
        try:
            if acks.get(timeout=PARENT_CHECK_SECONDS) == token:
                return
        except queue_module.Empty:
            if os.getppid() != parent_pid:
                os._exit(1)


def worker_main(
    worker_id: int,
    tasks: Any,
    events: Any,
    run_fn: Callable | None,
    threads: int = DEFAULT_THREADS,
    acks: Any = None,
    parent_pid: int | None = None,
) -> None:
    """A process-pool worker: execute tasks from its own queue until it receives None.

    `threads` > 0 sets torch's intra-op threads (0: torch's one per core), so N workers share
    the cores instead of each starting one thread per core (oversubscription makes small models
    several times slower). With `acks` (this worker's queue) a run's metric commit waits for
    the parent's ("sync", run_id, worker_id, token) acknowledgement. The worker dies with
    `parent_pid`.
    """
    if parent_pid is not None:
        die_with_parent(parent_pid)
    # Ctrl-C reaches the whole process group: the parent decides (it marks the runs
    # resumable and terminates the workers), so workers do not die mid-write on their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tokens = itertools.count()
    with torch_threads(threads):
        while True:
            task = tasks.get()
            if task is None:
                return
            sync = None
            if acks is not None:

                def sync(run_id: str = task.run_id) -> None:
                    token = next(tokens)
                    events.put(("sync", run_id, worker_id, token))
                    wait_for_ack(acks, token, parent_pid if parent_pid is not None else os.getppid())

            execute_run(task, events.put, run_fn, sync)
            events.put(("idle", worker_id))


def ray_task(task: RunTask, queue: Any, run_fn: Callable | None, acks: Any = None) -> str:
    """A Ray task: execute one run, streaming events through a ray.util.queue.Queue; with
    `acks` (a Queue of this task's own) a metric commit waits for the parent's token."""
    tokens = itertools.count()
    sync = None
    if acks is not None:

        def sync() -> None:
            token = next(tokens)
            queue.put(("sync", task.run_id, None, token))
            while acks.get(block=True) != token:
                pass

    execute_run(task, queue.put, run_fn, sync)
    return task.run_id


__all__ = ["RunTask", "default_run_fn", "die_with_parent", "execute_run", "resume_step"]
