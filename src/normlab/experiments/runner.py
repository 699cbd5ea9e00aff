"""Run an experiment: plan against the store, execute through an executor, write every result.

The parent process is the only writer of `<out>/normlab.db` (a file lock keeps a second
`normlab sweep` off the same folder). Each run gets `<out>/runs/<run_id>/` with its resolved
`config.json` and the engine's `checkpoint.pt`. Statuses decide what executes:

    finished, diverged  -> skipped (a config never trains twice)
    failed              -> skipped unless retry_failed=True
    queued, running     -> executed; 'running' here means an earlier process was killed
                           mid-run, so the run resumes from its checkpoint

A run that raises is stored as 'failed' with its traceback and the others go on.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from normlab._deprecated import renamed_argument, warn_renamed
from normlab.experiments.config import Experiment, load_experiment
from normlab.experiments.errors import ConfigError, ExecutorError, StoreError
from normlab.experiments.execute import DEFAULT_THREADS, RunTask, check_thread_count, torch_threads
from normlab.experiments.executors import EXECUTORS, import_ray, run_local, run_process, run_ray
from normlab.experiments.preflight import check_runs
from normlab.experiments.progress import ProgressView
from normlab.experiments.store import DB_NAME, DONE_STATUSES, Store, flatten_config
from normlab.experiments.writer import Writer

LOCK_NAME = ".normlab.lock"


@dataclass
class RunOutcome:
    """How one planned run stands after the sweep."""

    run_id: str
    group: str
    status: str  # finished | diverged | failed | queued (interrupted, resumable)
    skipped: bool = False  # already done (or failed without --retry-failed) before this sweep
    final: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass
class SweepSummary:
    """What `run_experiment` did: one outcome per planned (run, group)."""

    experiment: str
    out_dir: Path
    outcomes: list[RunOutcome]
    seconds: float

    def count(self, status: str) -> int:
        return len({o.run_id for o in self.outcomes if o.status == status and not o.skipped})

    @property
    def skipped(self) -> int:
        return len({o.run_id for o in self.outcomes if o.skipped})

    @property
    def ok(self) -> bool:
        """True when every run has a result (finished or diverged)."""
        return all(o.status in DONE_STATUSES for o in self.outcomes)

    def __str__(self) -> str:
        runs = len({o.run_id for o in self.outcomes})
        parts = [f"{self.count(s)} {s}" for s in ("finished", "diverged", "failed") if self.count(s)]
        interrupted = self.count("queued") + self.count("running")
        if interrupted:
            parts.append(f"{interrupted} interrupted (rerun to resume)")
        if self.skipped:
            parts.append(f"{self.skipped} skipped (already in the store)")
        failed_before = len({o.run_id for o in self.outcomes if o.skipped and o.status == "failed"})
        if failed_before:
            parts.append(f"{failed_before} of them failed before (--retry-failed runs them again)")
        return (
            f"{self.experiment}: {runs} runs — {', '.join(parts) or 'nothing to do'} "
            f"in {self.seconds:.1f} s; results in {self.out_dir}"
        )


def _labels(experiment: Experiment) -> dict[str, str]:
    """run_id -> short label from the keys that vary across the experiment (and its group)."""
    flats = {run.run_id: flatten_config(run.config.resolved()) for run in experiment.runs}
    keys = sorted({k for f in flats.values() for k in f if len({str(g.get(k)) for g in flats.values()}) > 1})
    labels = {}
    for run in experiment.runs:
        text = " ".join(f"{k}={flats[run.run_id].get(k)}" for k in keys) or run.run_id
        labels.setdefault(run.run_id, f"{run.group}: {text}" if run.group else text)
    return labels


@contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold `<out>/.normlab.lock` so that one process at a time writes this results folder."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # O_NOFOLLOW: a symlink planted at the lock's name is refused, not truncated through
        handle = os.fdopen(os.open(out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644), "a+")
    except OSError as exc:
        raise StoreError(
            f"cannot use {str(out_dir)!r} as the results folder ({exc.strerror}); choose another --out"
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise StoreError(
                f"another normlab process (pid {handle.read().strip() or '?'}) is running an "
                f"experiment in {str(out_dir)!r}; wait for it to end or use another --out"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop like Ctrl-C (started runs go back to 'queued', resumable)."""


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    """While the body runs, SIGTERM raises `Terminated` in the main thread, so a `kill` ends
    the sweep through the same clean-up as Ctrl-C instead of mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_executor(executor: str, workers: int) -> None:
    """ExecutorError unless the executor can run as asked (before anything is written)."""
    if executor not in EXECUTORS:
        raise ExecutorError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")
    if workers < 1:
        raise ExecutorError(f"--workers: expected a number >= 1, got {workers}")
    if executor == "ray":
        import_ray()  # a missing extra is a user error, not a traceback mid-sweep


def check_backend(backend: str, workers: int) -> None:
    """The deprecated name of `check_executor`; warns."""
    warn_renamed("check_backend", "check_executor")
    check_executor(backend, workers)


def check_runnable_here(experiment: Experiment, out_dir: str | Path, retry_failed: bool = False) -> dict[str, str]:
    """ConfigError (or ResourceError), before anything is written, when a run that would
    execute cannot run on this machine: its device is missing (cuda without a GPU), a GPU-only
    option (bf16, compile, cuda_graph) is set for a CPU run, its data cannot be loaded or
    batched as asked, its model cannot be built or does not fit in memory
    (`normlab.experiments.preflight`); or when a stored result was trained on other data than
    the data here (a different fingerprint). Returns run_id -> data fingerprint of the runs
    that will execute."""
    from normlab.train.engine import check_runnable_here as check_config

    stored: dict[str, str] = {}
    stored_prints: dict[str, str | None] = {}
    run_ids = [run.run_id for run in experiment.runs]
    if (Path(out_dir) / DB_NAME).exists():
        with Store.open(out_dir, create=False) as store:
            stored = store.run_status(run_ids)
            stored_prints = store.data_fingerprints(run_ids)
    problems: dict[str, list[str]] = {}  # message -> run ids
    todo, done = [], []
    for run in experiment.runs:
        status = stored.get(run.run_id)
        if status in DONE_STATUSES or (status == "failed" and not retry_failed):
            if status in DONE_STATUSES and stored_prints.get(run.run_id):
                done.append(run.config)
            continue
        todo.append(run.config)
        try:
            check_config(run.config)
        except ValueError as err:
            problems.setdefault(str(err), []).append(run.run_id)
    if problems:
        message, ids = next(iter(problems.items()))
        count = len({rid for ids in problems.values() for rid in ids})
        raise ConfigError(
            f"{count} run(s) of {experiment.name!r} cannot run on this machine (first: run {ids[0]}): {message}"
        )
    prints = check_runs(todo)
    for run_id, now in check_runs(done, data_only=True).items():
        if now != stored_prints[run_id]:
            config = next(c for c in done if c.run_id == run_id)
            raise ConfigError(
                f"run {run_id} is stored as done, but it was trained on other data: dataset "
                f"{config.dataset!r} (root {config.data_root or 'default'}) now has fingerprint "
                f"{now[:19]}..., the run recorded {stored_prints[run_id][:19]}...; restore the data "
                "it was trained on, or use another --out to train on this data"
            )
    return prints


def run_experiment(
    experiment: Experiment | str | Path,
    out_dir: str | Path = "runs",
    *,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    run_fn: Callable | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float | None = None,
    max_retries: int = 2,
    append: bool = False,
    threads: int = DEFAULT_THREADS,
    backend: str | None = None,
) -> SweepSummary:
    """Execute every run of an experiment that has no result yet and store what happens.

    Args:
        experiment: an Experiment, or the path of an experiment file.
        out_dir: the results folder (`normlab.db`, `runs/<run_id>/`).
        executor: where the runs execute: "local" (in this process, one after another),
            "process" (`workers` processes) or "ray".
        workers: processes for "process"; runs in flight for "ray" (1 or less: Ray decides).
        address: an existing Ray cluster ("auto", "ray://host:10001"); None starts a local one.
        retry_failed: execute runs stored as failed again.
        progress: show the rich progress bar on stderr.
        run_fn: executes one run, `run_fn(config, *, on_metrics, checkpoint_path) -> RunResult`
            (default `normlab.train.fit`); must be importable by name for process/ray.
        cpus_per_run, gpus_per_run: Ray resources per run (GPUs default to 1 when a config
            asks for cuda, or for auto on a cluster that has GPUs; else 0).
        max_retries: Ray retries of a run whose worker or node was lost.
        append: add these runs to the experiment's earlier ones (`normlab run` does) instead of
            redefining the experiment as exactly these runs.
        threads: torch intra-op threads per run, local and process executors (0: torch's one
            per core); restored afterwards. Not part of the run id; each run records it.
        backend: the deprecated name of `executor`; warns.

    Returns:
        A SweepSummary (`str()` is a one-line report).

    Example:
        >>> summary = run_experiment(load_experiment("configs/mnist1d_norm_batch.yaml"), "runs")
        >>> print(summary)
    """
    executor = renamed_argument("backend", backend, "executor", executor, default="local", where="run_experiment")
    check_executor(executor, workers)
    check_thread_count(threads)
    if not isinstance(experiment, Experiment):
        experiment = load_experiment(experiment)
    out = Path(out_dir)
    fingerprints: dict[str, str] = {}
    if executor != "ray":  # on Ray the cluster's machines, not this one, run the configs
        fingerprints = check_runnable_here(experiment, out, retry_failed)
    start = time.perf_counter()
    with _exclusive(out), Store.open(out) as store:
        store.add_experiment(experiment, append=append)
        run_ids = list(dict.fromkeys(run.run_id for run in experiment.runs))
        before = store.run_status(run_ids)
        todo = [
            rid for rid in run_ids if before[rid] not in DONE_STATUSES and (before[rid] != "failed" or retry_failed)
        ]
        configs = {run.run_id: run.config for run in experiment.runs}
        tasks = [RunTask(rid, configs[rid].resolved(), str(out / "runs" / rid)) for rid in todo]
        view = ProgressView(len(tasks), enabled=progress, title=experiment.name)
        writer = Writer(store, out, view, _labels(experiment), fingerprints)
        with view, _sigterm_stops():
            try:
                if executor == "local":
                    with torch_threads(threads):
                        run_local(tasks, writer, run_fn)
                elif executor == "process":
                    run_process(tasks, writer, run_fn, workers, threads)
                else:
                    devices = {c.device for c in configs.values()}
                    run_ray(
                        tasks,
                        writer,
                        run_fn,
                        workers=workers if workers > 1 else 0,
                        address=address,
                        cpus_per_run=cpus_per_run,
                        gpus_per_run=gpus_per_run,
                        max_retries=max_retries,
                        devices=devices,
                    )
            except BaseException:  # Ctrl-C or a bug: leave started runs resumable, never half-done
                for run_id in list(writer.running):
                    writer.interrupt(run_id, "interrupted; resumes from its last checkpoint on the next run")
                raise
        after = store.run_status(run_ids)
        errors = {row["run_id"]: row["error"] for row in store.run_rows(experiment.name)}
        executed = set(todo)
        outcomes = [
            RunOutcome(
                run_id=run.run_id,
                group=run.group,
                status=after[run.run_id],
                skipped=run.run_id not in executed,
                final=store.final_metrics(run.run_id),
                error=errors.get(run.run_id),
            )
            for run in experiment.runs
        ]
    return SweepSummary(experiment.name, out, outcomes, time.perf_counter() - start)


__all__ = ["RunOutcome", "SweepSummary", "check_backend", "check_executor", "check_runnable_here", "run_experiment"]
