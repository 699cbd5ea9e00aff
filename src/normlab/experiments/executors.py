"""Sweep executors: where runs execute. All of them hand events to one writer (the parent).

- `local`: in this process, one run after another.
- `process`: a pool of spawned worker processes, one run at a time each; a worker that dies
  (killed, out of memory) costs only its current run, which goes back to 'queued' and resumes
  from its checkpoint on the next `normlab sweep`; a fresh worker takes over the rest. Workers
  die with the parent (SIGKILL included), so a killed sweep leaves nothing training.
- `ray`: one Ray task per run (resources per run, retries on lost workers), events streamed
  back through a Ray queue; local Ray by default, an existing cluster by address. On several
  machines the results folder must be on storage they share (checkpoints live there).
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import queue as queue_module
from collections.abc import Callable, Sequence
from typing import Any

from normlab.experiments.errors import ExecutorError
from normlab.experiments.execute import DEFAULT_THREADS, RunTask, execute_run, ray_task, worker_main
from normlab.experiments.writer import Writer

EXECUTORS = ("local", "process", "ray")
POLL_SECONDS = 0.2


def run_local(tasks: Sequence[RunTask], writer: Writer, run_fn: Callable | None) -> None:
    """Execute the runs one by one in this process."""
    for task in tasks:
        writer.dispatch(task)
        execute_run(task, writer.handle, run_fn)


class _Worker:
    def __init__(self, ctx: Any, worker_id: int, events: Any, run_fn: Callable | None, threads: int) -> None:
        self.id = worker_id
        self.tasks = ctx.Queue()
        self.acks = ctx.Queue()  # tokens: "your metrics up to here are stored"
        self.current: RunTask | None = None
        self.process = ctx.Process(
            target=worker_main,
            daemon=True,
            args=(worker_id, self.tasks, events, run_fn, threads, self.acks, os.getpid()),
            name=f"normlab-worker-{worker_id}",
        )
        self.process.start()


def run_process(
    tasks: Sequence[RunTask], writer: Writer, run_fn: Callable | None, workers: int, threads: int = DEFAULT_THREADS
) -> None:
    """Execute the runs on `workers` spawned processes with `threads` torch threads each (0:
    torch's one per core); the parent writes every result."""
    ctx = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started threads
    events = ctx.Queue()
    pending = collections.deque(tasks)
    pool: dict[int, _Worker] = {}
    next_id = 0

    def assign(worker: _Worker) -> None:
        worker.current = pending.popleft() if pending else None
        if worker.current is None:
            worker.tasks.put(None)  # no more work: the worker exits
        else:
            writer.dispatch(worker.current)
            worker.tasks.put(worker.current)

    def spawn() -> None:
        nonlocal next_id
        worker = pool[next_id] = _Worker(ctx, next_id, events, run_fn, threads)
        next_id += 1
        assign(worker)

    def handle(event: tuple) -> None:
        if event[0] == "idle":
            if event[1] in pool:
                assign(pool[event[1]])
        elif event[0] == "sync":  # everything this worker sent before is stored: say so
            _, _, worker_id, token = event
            if worker_id in pool:
                pool[worker_id].acks.put(token)
        else:
            writer.handle(event)

    def drain() -> None:
        while True:
            try:
                handle(events.get_nowait())
            except queue_module.Empty:
                return

    stopped = False  # True once every run has ended normally
    try:
        for _ in range(min(max(workers, 1), len(pending))):
            spawn()
        while any(w.current is not None for w in pool.values()) or pending:
            try:
                handle(events.get(timeout=POLL_SECONDS))
            except queue_module.Empty:
                pass
            for worker in list(pool.values()):
                if worker.process.is_alive():
                    continue
                drain()  # what it sent before dying counts
                task = pool.pop(worker.id).current
                if task is not None and not writer.has_ended(task.run_id):
                    writer.interrupt(
                        task.run_id,
                        f"worker process {worker.process.pid} died (exit code "
                        f"{worker.process.exitcode}); the run resumes from its last checkpoint "
                        "on the next `normlab sweep`",
                    )
                if pending:
                    spawn()
        drain()
        stopped = True
    finally:
        for worker in pool.values():
            if worker.process.is_alive():
                if stopped:
                    worker.tasks.put(None)
                else:  # Ctrl-C or an error here: stop now; the runner marks the runs resumable
                    worker.process.terminate()
        for worker in pool.values():
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=5)


def import_ray() -> Any:
    """Ray, or an ExecutorError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ExecutorError(
            "--executor ray needs Ray, which is not installed; install it with "
            "`pip install 'normlab[ray]'` or use --executor process"
        ) from None
    return ray


def run_ray(
    tasks: Sequence[RunTask],
    writer: Writer,
    run_fn: Callable | None,
    *,
    workers: int = 0,
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float | None = None,
    max_retries: int = 2,
    devices: set[str] = frozenset(),
) -> None:
    """Execute the runs as Ray tasks; `workers` > 0 caps the runs in flight (0: Ray decides)."""
    if not tasks:  # every run already has a result: starting Ray would cost seconds for nothing
        return
    ray = import_ray()
    from ray.util.queue import Queue

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=True)
        except ConnectionError as exc:
            raise ExecutorError(f"cannot reach a Ray cluster at {address!r} ({exc}); check --address") from None
    if gpus_per_run is None:  # Ray hides GPUs from tasks that do not reserve one
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        wants = any(d.startswith("cuda") for d in devices) or ("auto" in devices and has_gpus)
        gpus_per_run = 1.0 if wants else 0.0
    events = Queue(actor_options={"num_cpus": 0})
    remote = ray.remote(ray_task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=max_retries)
    pending = collections.deque(tasks)
    limit = workers if workers > 0 else len(pending)
    inflight: dict[Any, RunTask] = {}
    acks: dict[str, Any] = {}  # run_id -> its task's Queue of commit acknowledgements

    def drain() -> None:
        size = events.qsize()
        if size:
            for event in events.get_nowait_batch(size):
                if event[0] == "sync":  # everything the task sent before is stored: say so
                    if event[1] in acks:
                        acks[event[1]].put(event[3])
                else:
                    writer.handle(event)

    try:
        while pending or inflight:
            while pending and len(inflight) < limit:
                task = pending.popleft()
                writer.dispatch(task)
                acks[task.run_id] = Queue(actor_options={"num_cpus": 0})
                inflight[remote.remote(task, events, run_fn, acks[task.run_id])] = task
            drain()
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_SECONDS)
            for ref in done:
                task = inflight.pop(ref)
                drain()
                acks.pop(task.run_id).shutdown()
                try:
                    ray.get(ref)
                except Exception as exc:  # the task itself was lost (worker/node died), retries spent
                    if not writer.has_ended(task.run_id):
                        writer.interrupt(task.run_id, f"Ray task lost after {max_retries} retries: {exc}")
        drain()
    finally:
        for ref in inflight:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()


__all__ = ["EXECUTORS", "import_ray", "run_local", "run_process", "run_ray"]
