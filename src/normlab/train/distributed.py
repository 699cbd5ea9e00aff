"""Start data-parallel runs: `launch(config)` trains one run on `config.nproc` processes.

Each process joins one `torch.distributed` process group (gloo on CPU, NCCL on GPUs, process r
on GPU r) and calls `normlab.train.fit`, which shards every global batch across the processes,
wraps the model in DistributedDataParallel and converts BN to SyncBatchNorm when
`config.sync_bn` (see `normlab.train.parallel`). Rank 0 alone emits metrics and writes
checkpoints; `launch` forwards rank 0's metrics to the caller's `on_metrics` as they arrive
(and its `commit()` before each checkpoint, as `fit` does) and returns rank 0's `RunResult`,
so to the caller a data-parallel run looks like any other run.

Under `torchrun` (RANK and WORLD_SIZE set in the environment) `launch` starts nothing: the
process joins the group torchrun set up (env:// rendezvous) and trains its share.

    torchrun --nproc-per-node 4 -m normlab run my_run.yaml   # 4 GPUs, one run
    result = launch(RunConfig(nproc=2, sync_bn=True))         # 2 CPU processes (gloo)
"""

from __future__ import annotations

import datetime
import os
import pickle
import queue as queue_module
import socket
import sys
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from normlab.device import resolve_device
from normlab.train.config import RunConfig
from normlab.train.engine import RunResult, fit

__all__ = ["free_port", "in_torchrun", "is_main_process", "launch", "resolve_backend"]

MetricsCallback = Callable[[int, int, dict[str, float]], None]

# How long a collective may wait for the other processes before failing (not hanging forever).
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago (for the rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def in_torchrun() -> bool:
    """True when this process was started by torchrun (RANK and WORLD_SIZE are set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_main_process() -> bool:
    """True in rank 0 (or when not distributed): the process that stores results and prints.

    Reads the process group when one is initialized, else torchrun's RANK (launch leaves the
    group it joined, so after `launch` returns under torchrun only RANK says who is who).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def resolve_backend(config: RunConfig, nproc: int) -> str:
    """ "gloo" for CPU runs, "nccl" for GPU runs (one GPU per process); clear errors otherwise."""
    named = _parse_device(config.device)
    if named is not None and named.type == "cuda" and named.index is not None and nproc > 1:
        raise ValueError(
            f"device: {config.device!r} pins every process to one GPU; use device='cuda' so that "
            "process r trains on GPU r"
        )
    try:
        device = resolve_device(config.device, local_rank=0)
    except ValueError as err:
        raise ValueError(f"device: {err}") from None
    if device.type == "cpu":
        return "gloo"
    if torch.cuda.device_count() < nproc:
        raise ValueError(
            f"nproc={nproc} GPU processes need {nproc} GPUs, but {torch.cuda.device_count()} "
            f"are visible; lower nproc or use device='cpu'"
        )
    return "nccl" if dist.is_nccl_available() else "gloo"


def _parse_device(name: str) -> torch.device | None:
    try:
        return torch.device(name)
    except (RuntimeError, TypeError):
        return None  # "auto", or not a device: resolve_device says which


def launch(
    config: RunConfig,
    nproc: int | None = None,
    *,
    on_metrics: MetricsCallback | None = None,
    backend: str | None = None,
    timeout: datetime.timedelta = DEFAULT_TIMEOUT,
    **fit_kwargs: Any,
) -> RunResult:
    """Train `config` on `nproc` data-parallel processes and return rank 0's `RunResult`.

    Args:
        config: the run; `config.nproc` is the process count unless `nproc` overrides it
            (the run's id then includes the new count, as it should: it changes the numbers).
        nproc: processes to start; default `config.nproc`. 1 calls `fit` in this process.
        on_metrics: ``on_metrics(step, epoch, values)`` called in THIS process with every
            measurement of rank 0, in order; its `commit()`, if it has one, is called here
            before each of rank 0's checkpoints, after every measurement before it.
        backend: "gloo" or "nccl"; default gloo for CPU runs, nccl for GPU runs.
        timeout: how long a process waits in a collective before failing.
        **fit_kwargs: passed to `normlab.train.fit` in every process (`dataset`,
            `checkpoint_path`, `stop`); they are pickled, so `stop` must be a
            `multiprocessing` Event (`torch.multiprocessing.get_context("spawn").Event()`).

    Under torchrun, nothing is started: this process joins torchrun's group (env://) and the
    result is this process's `fit` result; only where `is_main_process()` is it the run's to
    store or print.

    Raises:
        ValueError: bad nproc/device/backend, or an unpicklable fit argument.
        The exception a process raised (with its traceback as a note), when one fails.

    Example:
        >>> result = launch(RunConfig(nproc=2, sync_bn=True, epochs=1), on_metrics=print)
        >>> result.final["test_acc"]
    """
    if nproc is not None and nproc != config.nproc:
        if nproc < 1:
            raise ValueError(f"nproc must be >= 1, got {nproc}")
        config = type(config).model_validate({**config.resolved(), "nproc": nproc})
    nproc = config.nproc
    if in_torchrun() or (dist.is_available() and dist.is_initialized()):
        return _fit_in_existing_group(config, backend, timeout, on_metrics, fit_kwargs)
    if nproc == 1:
        return fit(config, on_metrics=on_metrics, **fit_kwargs)
    backend = backend or resolve_backend(config, nproc)
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    return _spawn(config, nproc, backend, timeout, on_metrics, fit_kwargs)


def _fit_in_existing_group(config, backend, timeout, on_metrics, fit_kwargs) -> RunResult:
    """torchrun (env://) or a caller's own process group: join it if needed, train, leave."""
    created = False
    if not dist.is_initialized():
        world_size = int(os.environ["WORLD_SIZE"])
        backend = backend or resolve_backend(config, world_size)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, init_method="env://", timeout=timeout)
        created = True
    try:
        return fit(config, on_metrics=on_metrics, **fit_kwargs)
    finally:
        if created:
            dist.destroy_process_group()


def _spawn(config, nproc, backend, timeout, on_metrics, fit_kwargs) -> RunResult:
    """Start the processes, relay rank 0's metrics, return its result or re-raise a failure."""
    context = mp.get_context("spawn")
    messages, acks = context.Queue(), context.Queue()  # to the parent; commit acks to rank 0
    port = free_port()
    args = (nproc, port, backend, timeout, config, fit_kwargs, messages, acks, on_metrics is not None)
    processes = [context.Process(target=_worker, args=(rank, *args)) for rank in range(nproc)]
    try:
        for process in processes:
            process.start()  # pickles the arguments
    except (pickle.PicklingError, TypeError, AttributeError) as err:
        for process in processes:
            if process.pid is not None:
                process.terminate()
                process.join()
        raise ValueError(
            f"launch passes fit's arguments ({', '.join(fit_kwargs) or 'none'}) to each "
            f"process, so they must be picklable: {err}. For stop, pass a "
            "torch.multiprocessing.get_context('spawn').Event(), not a threading.Event or a "
            "lambda."
        ) from err
    outcome: dict[str, Any] = {}
    finished = False

    def handle(message: tuple) -> None:
        if message[0] == "metrics" and on_metrics is not None:
            on_metrics(*message[1:])
        elif message[0] == "commit":  # every metric rank 0 sent before it was handled above
            commit = getattr(on_metrics, "commit", None)
            if commit is not None:
                commit()
            acks.put(message[1])
        elif message[0] in ("result", "error"):
            outcome.setdefault(message[0], message[1:])

    try:
        while "error" not in outcome:
            try:
                handle(messages.get(timeout=0.2))
                continue
            except queue_module.Empty:
                pass
            dead = [r for r, p in enumerate(processes) if p.exitcode not in (None, 0)]
            if dead or all(p.exitcode is not None for p in processes):
                # A process flushes its messages before it exits: read what is left.
                _drain(messages, handle)
                if dead and "error" not in outcome:
                    code = processes[dead[0]].exitcode
                    outcome["error"] = (dead[0], None, f"exit code {code}, no Python traceback")
                break
        finished = True
    finally:
        # After a failure (or an exception here, e.g. in on_metrics or Ctrl-C) the others
        # may wait in a collective until the timeout: stop them.
        if "error" in outcome or not finished:
            for process in processes:
                if process.exitcode is None:
                    process.terminate()
        for process in processes:
            process.join()
    if "error" in outcome:
        _reraise(*outcome["error"], nproc=nproc)
    if "result" not in outcome:
        codes = [p.exitcode for p in processes]
        raise RuntimeError(f"the {nproc} processes ended (exit codes {codes}) without a result")
    return outcome["result"][0]


def _drain(messages, handle: Callable[[tuple], None]) -> None:
    while True:
        try:
            handle(messages.get(timeout=0.5))
        except queue_module.Empty:
            return


def _reraise(rank: int, error: BaseException | None, text: str, nproc: int) -> None:
    note = f"raised in process {rank} of {nproc} (normlab.train.distributed.launch):\n{text}"
    if error is None:
        raise RuntimeError(note)
    if hasattr(error, "add_note"):  # Python >= 3.11
        error.add_note(note)
    raise error


class _Relay:
    """Rank 0's `on_metrics`: sends each emission to the parent, in order. `commit()` (which fit
    calls before each checkpoint) returns once the parent has passed every emission on and
    committed its own `on_metrics`, so a data-parallel checkpoint is never ahead of the stored
    metrics either."""

    def __init__(self, messages, acks, timeout: datetime.timedelta) -> None:
        self.messages, self.acks, self.timeout = messages, acks, timeout
        self.commits = 0

    def __call__(self, step: int, epoch: int, values: dict[str, float]) -> None:
        self.messages.put(("metrics", step, epoch, dict(values)))

    def commit(self) -> None:
        self.commits += 1
        self.messages.put(("commit", self.commits))
        try:
            token = self.acks.get(timeout=self.timeout.total_seconds())
        except queue_module.Empty:
            raise RuntimeError(
                f"the launching process did not confirm that rank 0's metrics are "
                f"stored within {self.timeout}; the checkpoint is not written"
            ) from None
        if token != self.commits:
            raise RuntimeError(f"metrics commit {self.commits} was answered by commit {token}")


def _worker(rank, nproc, port, backend, timeout, config, fit_kwargs, messages, acks, relay) -> None:
    """One process: join the group, train, send rank 0's metrics and result to the parent."""
    # The variables torchrun would set, for code that reads them (fit picks GPU LOCAL_RANK).
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(
            backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=nproc,
            timeout=timeout,
        )  # fmt: skip

        forward = _Relay(messages, acks, timeout) if relay and rank == 0 else None
        result = fit(config, on_metrics=forward, **fit_kwargs)
        # Leave together: rank 0 may still be committing its last metrics while the others are
        # done, and gloo aborts a process ("terminate called without an active exception") that
        # tears its group down while a peer is still connected. (A failing rank skips this; the
        # parent then stops the others.)
        dist.barrier()
        if rank == 0:
            messages.put(("result", result))
    except BaseException as error:  # noqa: BLE001 - everything goes back to the parent
        text = traceback.format_exc()
        try:
            pickle.dumps(error)
        except Exception:
            error = None
        messages.put(("error", rank, error, text))
        messages.close()
        messages.join_thread()  # make sure the message leaves before the process does
        sys.exit(1)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
