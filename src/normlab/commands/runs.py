"""`normlab run` (one run, or its share under torchrun) and `normlab sweep` (every run of an
experiment, through a sweep executor)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from normlab.commands.common import fail, load_args, print_failures
from normlab.experiments.config import Experiment
from normlab.experiments.execute import CHECKPOINT_NAME, check_thread_count, torch_threads
from normlab.experiments.runner import check_executor, run_experiment
from normlab.experiments.store import DB_NAME, Store
from normlab.train.distributed import in_torchrun, is_main_process, launch


def run(
    args: list[str] | None,
    out: Path,
    name: str | None,
    as_json: bool,
    quiet: bool,
    nproc: int | None,
    retry_failed: bool,
    threads: int,
) -> None:
    """Plan the one run `args` describe, then train it (or show its stored result)."""
    if nproc is not None:
        args = [*(args or []), f"nproc={nproc}"]
    experiment = load_args(args, name or ("run" if not args or "=" in args[0] else None))
    runs = {run.run_id for run in experiment.runs}
    if len(runs) != 1:
        fail(f"`run` trains one run, got {len(runs)} (a sweep or several groups); use `normlab sweep`")
    check_thread_count(threads)
    if in_torchrun() and not is_main_process():
        _train_share(experiment, out, retry_failed, threads)
        return
    summary = run_experiment(
        experiment,
        out,
        progress=not quiet and not as_json,
        append=True,
        retry_failed=retry_failed,
        threads=threads,
    )
    outcome = summary.outcomes[0]
    if as_json:
        payload = {"run_id": outcome.run_id, "status": outcome.status, **outcome.final}
        if outcome.status == "failed" and outcome.error:
            payload["error"] = outcome.error.strip().splitlines()[-1]
        typer.echo(json.dumps(payload))
    else:
        typer.echo(str(summary), err=True)
        print_failures(summary)
    if outcome.status == "failed":
        raise typer.Exit(1)


def _train_share(experiment: Experiment, out: Path, retry_failed: bool, threads: int) -> None:
    """torchrun's other ranks train their share; rank 0 alone stores the run. They train only
    when rank 0 will (else they would wait for it at the first collective)."""
    planned = experiment.runs[0]
    if _rank0_will_train(out, planned.run_id, retry_failed):
        # The same checkpoint path as rank 0's runner: fit's resume and checkpoint steps are
        # collective (rank 0 alone writes), so every rank must take them.
        checkpoint = out / "runs" / planned.run_id / CHECKPOINT_NAME
        with torch_threads(threads):  # (rank 0's runner sets its own)
            launch(planned.config, checkpoint_path=checkpoint)


def _rank0_will_train(out: Path, run_id: str, retry_failed: bool) -> bool:
    """Whether the runner on rank 0 trains `run_id` rather than showing its stored result."""
    if not (out / DB_NAME).exists():
        return True
    status = Store(out / DB_NAME, create=False).run_status([run_id]).get(run_id)
    return status in (None, "queued", "running") or (status == "failed" and retry_failed)


def sweep(
    args: list[str] | None,
    out: Path,
    name: str | None,
    executor: str,
    workers: int,
    address: str | None,
    cpus_per_run: float,
    gpus_per_run: float | None,
    retry_failed: bool,
    append: bool,
    dry_run: bool,
    quiet: bool,
    threads: int,
) -> None:
    """Run (or with `dry_run` list) every run of the experiment `args` describe."""
    experiment = load_args(args, name)
    check_executor(executor, workers)  # a dry run that passes means the real one starts
    check_thread_count(threads)  # before a dry run, too
    if dry_run:
        for run in experiment.runs:
            typer.echo(f"{run.run_id}  {run.group or '-'}  {json.dumps(run.config.resolved(), sort_keys=True)}")
        typer.echo(f"{experiment.name}: {len(experiment.runs)} runs", err=True)
        return
    summary = run_experiment(
        experiment,
        out,
        executor=executor,
        workers=workers,
        address=address,
        retry_failed=retry_failed,
        progress=not quiet,
        cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run,
        append=append,
        threads=threads,
    )
    typer.echo(str(summary), err=True)
    print_failures(summary)
    if not summary.ok:
        raise typer.Exit(1)


__all__ = ["run", "sweep"]
