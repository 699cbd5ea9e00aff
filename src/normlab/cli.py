"""The `normlab` command line (typer): study, run, sweep, ls, compare, export, report, data, bench.

Every command takes `--out DIR` (the results folder, default ./runs). A user mistake (bad
key, value, file, experiment name, argument) prints ONE message on stderr and exits with
code 2, without a traceback; tracebacks are kept for bugs.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

import normlab
from normlab.experiments.config import config_keys, load_experiment
from normlab.experiments.errors import ConfigError, UserError
from normlab.experiments.execute import CHECKPOINT_NAME, check_thread_count, torch_threads
from normlab.experiments.keys import suggest
from normlab.experiments.paths import open_new, safe_dir
from normlab.experiments.runner import check_backend, run_experiment
from normlab.experiments.store import DB_NAME, STATUSES, Store

# The modules above load no torch, pandas or matplotlib, so `normlab --help` and `normlab ls`
# start fast (tests/test_imports.py, benchmarks/startup.py). A command that needs those imports
# its module where it runs.

app = typer.Typer(
    name="normlab",
    help="Batch normalization, measured: run the BN study, sweeps of runs, and read the results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Datasets: what is on disk and what is missing.", no_args_is_help=True)
app.add_typer(data_app, name="data")
bench_app = typer.Typer(
    help="Benchmarks: each prints a table and writes JSON with its provenance (versions, "
    "device, threads, commit).",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"normlab {normlab.__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print normlab's version and exit"
    ),
) -> None:
    pass

OUT_HELP = "results folder (holds normlab.db and runs/<run_id>/)"
ARGS_HELP = (
    "an optional experiment file (.yaml/.toml) first, then key=value overrides; dotted keys "
    "for nested ones (optim.weight_decay=0.1) and comma lists to sweep (batch_size=16,32)"
)

THREADS_HELP = (
    "torch intra-op threads while training, restored afterwards; 0 keeps torch's setting (one "
    "thread per core). Not part of the run id: a stored run is not trained again with other "
    "threads, and on CPU losses differ in the last digits between thread counts"
)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"normlab: error: {message}", err=True)
    raise typer.Exit(code)


def _user_errors(command: Callable) -> Callable:
    """Turn a UserError (and Ctrl-C) into one line on stderr and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted; run the same command again to resume where it stopped", code=130)

    return wrapper


def _split_args(args: list[str] | None) -> tuple[Path | None, list[str]]:
    """[file] key=value... -> (file or None, overrides)."""
    args = list(args or [])
    path = None
    if args and "=" not in args[0]:
        path = Path(args.pop(0))
    for arg in args:
        if "=" not in arg:
            raise ConfigError(
                f"argument {arg!r}: expected key=value; the experiment file, if any, goes first "
                "(e.g. `normlab sweep configs/x.yaml seed=0,1`)"
            )
    return path, args


def _load(args: list[str] | None, name: str | None) -> Any:
    path, overrides = _split_args(args)
    return load_experiment(path, overrides, name=name)


def _rank0_will_train(out: Path, run_id: str, retry_failed: bool) -> bool:
    """Whether the runner on rank 0 trains `run_id` rather than showing its stored result."""
    if not (out / DB_NAME).exists():
        return True
    status = Store(out / DB_NAME, create=False).run_status([run_id]).get(run_id)
    return status in (None, "queued", "running") or (status == "failed" and retry_failed)


def _print_failures(summary: Any) -> None:
    for outcome in summary.outcomes:
        if outcome.status == "failed" and not outcome.skipped and outcome.error:
            last = outcome.error.strip().splitlines()[-1]
            typer.echo(f"  run {outcome.run_id} failed: {last}", err=True)


def _keys_epilog() -> str:
    return "Keys: " + ", ".join(config_keys())


@app.command(epilog=_keys_epilog())
@_user_errors
def run(
    args: Optional[list[str]] = typer.Argument(None, help=ARGS_HELP, metavar="[CONFIG] [KEY=VALUE]..."),
    out: Path = typer.Option(Path("runs"), "--out", help=OUT_HELP),
    name: Optional[str] = typer.Option(None, "--name", help="experiment name (default: the file's name, or 'run')"),
    as_json: bool = typer.Option(False, "--json", help="print the final metrics as one JSON object on stdout"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    nproc: Optional[int] = typer.Option(
        None, "--nproc", min=1, help="data-parallel processes for this run (same as nproc=N)"
    ),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="train again a config stored as failed"),
    threads: int = typer.Option(1, "--threads", help=THREADS_HELP + "; with --nproc, for this process only"),
) -> None:
    """Train ONE run (defaults: the seed's MLP, Adam, lr 1e-3, batch 64 on MNIST-1D).

    A config trained before is not trained again: its stored result is shown (a failed one is
    trained again with --retry-failed). Exit code 0 when
    the run has a result, 1 when it failed, 2 for bad input. `--nproc N` trains the run on N
    processes (DistributedDataParallel; gloo on CPU, NCCL on GPUs; batch_size is the global
    batch); under `torchrun -m normlab run ...` the processes are torchrun's.

    Example: normlab run norm=none epochs=3 --json

    Example: normlab run nproc=2 sync_bn=true batch_size=128

    Example: normlab run model=cnn --threads 2
    """
    if nproc is not None:
        args = [*(args or []), f"nproc={nproc}"]
    experiment = _load(args, name or ("run" if not args or "=" in args[0] else None))
    runs = {run.run_id for run in experiment.runs}
    if len(runs) != 1:
        _fail(f"`run` trains one run, got {len(runs)} (a sweep or several groups); use `normlab sweep`")
    check_thread_count(threads)
    _run_one(experiment, out, as_json, quiet, retry_failed, threads)


def _run_one(experiment: Any, out: Path, as_json: bool, quiet: bool, retry_failed: bool,
             threads: int) -> None:
    """`normlab run` once its one run is planned: train it (or show its stored result)."""
    from normlab.train.distributed import in_torchrun, is_main_process, launch

    if in_torchrun() and not is_main_process():
        # torchrun's other ranks train their share; rank 0 alone stores the run. They train
        # only when rank 0 will (else they would wait for it at the first collective).
        planned = experiment.runs[0]
        if _rank0_will_train(out, planned.run_id, retry_failed):
            # The same checkpoint path as rank 0's runner: fit's resume and checkpoint steps
            # are collective (rank 0 alone writes), so every rank must take them.
            checkpoint = out / "runs" / planned.run_id / CHECKPOINT_NAME
            with torch_threads(threads):  # (rank 0's runner sets its own)
                launch(planned.config, checkpoint_path=checkpoint)
        return
    summary = run_experiment(
        experiment, out, progress=not quiet and not as_json, append=True, retry_failed=retry_failed,
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
        _print_failures(summary)
    if outcome.status == "failed":
        raise typer.Exit(1)


@app.command(epilog=_keys_epilog())
@_user_errors
def sweep(
    args: Optional[list[str]] = typer.Argument(None, help=ARGS_HELP, metavar="[EXPERIMENT] [KEY=VALUE]..."),
    out: Path = typer.Option(Path("runs"), "--out", help=OUT_HELP),
    name: Optional[str] = typer.Option(None, "--name", help="experiment name (default: the file's `name:`, or 'sweep')"),
    backend: str = typer.Option("local", "--backend", help="local (in-process), process (--workers N) or ray"),
    workers: int = typer.Option(1, "--workers", help="worker processes (process) or runs in flight (ray)"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: start a local Ray)"),
    cpus_per_run: float = typer.Option(1.0, "--cpus-per-run", help="Ray: CPUs reserved per run"),
    gpus_per_run: Optional[float] = typer.Option(
        None, "--gpus-per-run", help="Ray: GPUs per run (default 1 for device=cuda, or auto on a GPU cluster)"
    ),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="run again the runs stored as failed"),
    append: bool = typer.Option(
        False, "--append", help="add these runs to the experiment instead of redefining it as exactly these"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the runs and exit; nothing is written"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    threads: int = typer.Option(
        1, "--threads", help=THREADS_HELP + "; per worker with --backend process (Ray: the cluster's setting)"
    ),
) -> None:
    """Run every combination of an experiment; finished runs are skipped, interrupted ones resume.

    Exit code 0 when every run has a result (finished or diverged), 1 when some failed or were
    interrupted (run the same command again to resume), 2 for bad input.

    Example: normlab sweep configs/mnist1d_norm_batch.yaml seed=0,1,2 --backend process --workers 2
    """
    experiment = _load(args, name)
    check_backend(backend, workers)  # a dry run that passes means the real one starts
    check_thread_count(threads)  # before a dry run, too
    if dry_run:
        for run in experiment.runs:
            typer.echo(f"{run.run_id}  {run.group or '-'}  {json.dumps(run.config.resolved(), sort_keys=True)}")
        typer.echo(f"{experiment.name}: {len(experiment.runs)} runs", err=True)
        return
    summary = run_experiment(
        experiment, out, backend=backend, workers=workers, address=address,
        retry_failed=retry_failed, progress=not quiet, cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run, append=append, threads=threads,
    )
    typer.echo(str(summary), err=True)
    _print_failures(summary)
    if not summary.ok:
        raise typer.Exit(1)


@app.command("ls")
@_user_errors
def ls(
    experiment: Optional[str] = typer.Argument(None, help="list this experiment's runs instead"),
    out: Path = typer.Option(Path("runs"), "--out", help=OUT_HELP),
    as_json: bool = typer.Option(False, "--json", help="print JSON for scripts"),
) -> None:
    """List the experiments in the results folder and how many runs are in each status.

    Example: normlab ls --out runs --json
    """
    with Store.open(out, create=False) as store:
        if experiment is None:
            table = {name: store.status_counts(name) for name in store.experiments()}
            if as_json:
                typer.echo(json.dumps(table))
                return
            if not table:
                typer.echo(f"no experiments in {out}")
            for name, counts in table.items():
                parts = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s))
                typer.echo(f"{name}: {sum(counts.values())} runs ({parts})")
            return
        rows = store.run_rows(experiment)
    if as_json:
        keep = ("run_id", "status", "seconds", "steps", "final", "error", "config")
        typer.echo(json.dumps([{"group": r["grp"]} | {k: r[k] for k in keep} for r in rows]))
        return
    for row in rows:
        acc = row["final"].get("test_acc")
        acc_text = f"test_acc {acc:.4f}" if acc is not None else ""
        typer.echo(f"{row['run_id']}  {row['grp'] or '-':<16} {row['status']:<9} {acc_text}")


@app.command()
@_user_errors
def compare(
    experiment: str = typer.Argument(..., help="experiment name (see `normlab ls`)"),
    out: Path = typer.Option(Path("runs"), "--out", help=OUT_HELP),
    metric: str = typer.Option("test_acc", "--metric", help="metric to compare (its last value per run)"),
) -> None:
    """Table of the final metric per group and variant: mean +- 95% CI over seeds (n).

    Example: normlab compare mnist1d-norm-batch --metric test_acc
    """
    from rich.console import Console
    from rich.table import Table

    from normlab.analysis.frames import final_frame, label_runs, varying_keys
    from normlab.analysis.stats import summarize
    from normlab.experiments.errors import StoreError
    from normlab.experiments.store import Store

    with Store.open(out, create=False) as store:
        runs = store.runs_frame(experiment)
        metrics = store.metrics_frame(experiment, names=[metric])
    if metrics.empty:
        raise StoreError(f"experiment {experiment!r} has no {metric!r} values yet; check --metric or run it first")
    finals = final_frame(runs, metrics, metric)
    finals["variant"] = label_runs(finals, varying_keys(runs, exclude=("group",)))
    table = Table(title=f"{experiment}: final {metric}, mean +- 95% CI over seeds")
    for column in ("group", "variant", metric, "runs"):
        table.add_column(column)
    for (group, variant), rows in finals.groupby(["group", "variant"], sort=False):
        s = summarize(rows["value"])
        table.add_row(group or "-", str(variant), s.format(4), f"{len(rows)} ({(rows['status'] == 'finished').sum()} finished)")
    Console().print(table)


@app.command()
@_user_errors
def export(
    experiment: str = typer.Argument(..., help="experiment name (see `normlab ls`)"),
    out: Path = typer.Option(Path("runs"), "--out", help=OUT_HELP),
    fmt: str = typer.Option("csv", "--format", help="csv, parquet, tensorboard or mlflow"),
    dest: Optional[str] = typer.Option(
        None, "--dest", help="folder for the files (default: <out>/exports); for mlflow a tracking URI or a folder for mlflow.db"
    ),
) -> None:
    """Write an experiment's runs and metrics tables to <dest>/<experiment>_{runs,metrics}.<format>,
    or its runs (config as hyper-parameters, metrics with their steps) to TensorBoard event files
    (<dest>/tensorboard/<experiment>/<run>/) or an MLflow tracking store (default
    sqlite:///<dest>/mlflow.db), one tracker run per stored run.

    Example: normlab export mnist1d-norm-batch --format parquet
    Example: normlab export mnist1d-norm-batch --format tensorboard  (then tensorboard --logdir runs/exports/tensorboard)
    """
    from normlab.experiments.errors import ConfigError
    from normlab.experiments.store import Store

    formats = ("csv", "parquet", "tensorboard", "mlflow")
    if fmt not in formats:
        raise ConfigError(f"--format: expected one of {', '.join(formats)}, got {fmt!r}")
    if fmt in ("tensorboard", "mlflow"):
        _export_to_tracker(experiment, out, fmt, dest)
        return
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("--format parquet needs pyarrow: `pip install 'normlab[parquet]'`, or use --format csv") from None
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


def _export_to_tracker(experiment: str, out: Path, fmt: str, dest: Optional[str]) -> None:
    """`normlab export --format tensorboard|mlflow`: one tracker run per stored run."""
    from normlab.experiments.errors import ConfigError
    from normlab.experiments.store import Store
    from normlab.trackers import stored_runs

    try:
        if fmt == "tensorboard":
            from normlab.trackers.tensorboard import export_runs, require
        else:
            from normlab.trackers.mlflow import export_runs, require
        require()
        with Store.open(out, create=False) as store:
            runs = stored_runs(store, experiment)
        if fmt == "tensorboard":
            # inside --out (not through a planted link) unless the user named a folder
            folder = Path(dest) / "tensorboard" / experiment if dest else safe_dir(out, "exports", "tensorboard", experiment)
            export_runs(runs, folder)
            typer.echo(f"{len(runs)} run(s) -> {folder}  (view: tensorboard --logdir {folder})")
            return
        if dest and "://" in dest:
            uri = dest
        else:
            folder = Path(dest) if dest else safe_dir(out, "exports")
            folder.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{(folder / 'mlflow.db').resolve()}"
        written, skipped = export_runs(runs, experiment, uri)
        typer.echo(f"{written} run(s) -> MLflow experiment {experiment!r} at {uri}"
                   + (f" ({skipped} exported before, skipped)" if skipped else "")
                   + f"  (view: mlflow ui --backend-store-uri {uri})")
    except ImportError as err:
        raise ConfigError(f"--format {fmt}: {err}") from None


@app.command()
@_user_errors
def study(
    dataset: str = typer.Option("mnist1d", "--dataset", help="mnist1d (embedded) or a dataset on disk, e.g. cifar10"),
    quick: bool = typer.Option(False, "--quick", help="a smoke-test sized study (under a minute)"),
    out: Path = typer.Option(Path("runs"), "--out", help=OUT_HELP),
    backend: str = typer.Option("process", "--backend", help="local, process or ray"),
    workers: int = typer.Option(2, "--workers", help="worker processes (process backend); one torch thread each"),
    tier: str = typer.Option("default", "--tier",
                             help="default (about 6 min on 2 CPU cores) or full (every part, at most 30 min)"),
) -> None:
    """Run the whole batch-norm study and write its report (HTML + Markdown + figures).

    Every variant runs at its own learning rate, selected on held-out training data, then 10
    evaluation seeds; see docs/study.md. `--tier full` adds the parts the default leaves out
    (listed at the end of the default report), reusing the default tier's runs.

    Example: normlab study --quick --out runs
    """
    from normlab.study import run_study

    report_dir = run_study(dataset=dataset, quick=quick, out=str(out), backend=backend, workers=workers,
                           tier=tier)
    typer.echo(f"report: {Path(report_dir) / 'report.html'}")


@app.command()
@_user_errors
def report(
    experiment: str = typer.Argument(..., help="experiment name (see `normlab ls`)"),
    out: Path = typer.Option(Path("runs"), "--out", help=OUT_HELP),
) -> None:
    """Write the report (report.html, report.md, PNGs) of an experiment or a study from the store.

    Example: normlab report mnist1d-norm-batch --out runs
    """
    from normlab.analysis.report import write_report
    from normlab.study.report import stored_study, write_study_report

    study = stored_study(out, experiment)
    typer.echo(str(write_study_report(out, experiment) if study else write_report(out, experiment)))


@data_app.command("info")
@_user_errors
def data_info(
    name: str = typer.Argument(..., help="dataset name, e.g. mnist1d or cifar10"),
    root: Optional[Path] = typer.Option(None, "--root", help="data folder (default $NORMLAB_DATA)"),
    out: Path = typer.Option(Path("runs"), "--out", help="unused; accepted like every command"),
) -> None:
    """Show what is on disk for a dataset and what is missing (never downloads).

    Example: normlab data info cifar10
    """
    from normlab.data import dataset_names, describe_data

    if name.strip().lower() not in dataset_names():
        _fail(f"unknown dataset {name!r}{suggest(name, dataset_names())} (valid: {', '.join(dataset_names())})")
    typer.echo(describe_data(name, root))


BENCH_THREADS_HELP = "torch intra-op threads during the benchmark, restored after (default: torch's; 1 on a shared CPU)"


@bench_app.command("loop")
@_user_errors
def bench_loop(
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto (CUDA when there is one)"),
    samples: int = typer.Option(50_000, "--samples", help="training images per epoch (50,000 = CIFAR-10's train split)"),
    repeats: int = typer.Option(3, "--repeats", help="alternating timed repetitions per norm (the median is shown)"),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes of the seed-style loop"),
    norms: str = typer.Option("batch,none", "--norms", help="comma-separated norms, one table row each"),
    compile_model: bool = typer.Option(False, "--compile", help="engine: torch.compile (GPU)"),
    precision: str = typer.Option("fp32", "--precision", help="engine: fp32, or bf16 autocast (GPU)"),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="engine: replay each step as one CUDA graph (GPU)"),
    threads: Optional[int] = typer.Option(None, "--threads", help=BENCH_THREADS_HELP),
    out: Path = typer.Option(Path("training_loop.json"), "--out", help="the JSON result file"),
) -> None:
    """The seed notebook's training loop vs normlab's engine: seconds per epoch and their ratio.

    The seed's MLP with and without BN, one epoch of CIFAR-shaped synthetic images, batch 64,
    Adam 1e-3; seed-style = a DataLoader over a per-sample normalizing Dataset with a .item()
    every step; engine = normlab.train.fit. Ratio = seed-style / engine (> 1: engine faster).
    Same options and JSON as benchmarks/training_loop.py.

    Example: normlab bench loop --device cpu --samples 5000 --threads 1

    Example: normlab bench loop --device cuda --cuda-graph --out training_loop_graph.json
    """
    from normlab.bench.training_loop import bench_training_loop, split_norms

    bench_training_loop(device=device, samples=samples, repeats=repeats, workers=workers,
                        norms=split_norms(norms), compile_model=compile_model, precision=precision,
                        cuda_graph=cuda_graph, threads=threads, out=str(out))


@bench_app.command("layers")
@_user_errors
def bench_layers(
    threads: Optional[int] = typer.Option(None, "--threads", help=BENCH_THREADS_HELP),
    repeats: int = typer.Option(20, "--repeats", help="timed steps per shape and backend (the median is shown)"),
    quick: bool = typer.Option(False, "--quick", help="two small shapes instead of five (a smoke test)"),
    out: Path = typer.Option(Path("layers_cpu.json"), "--out", help="the JSON result file"),
) -> None:
    """BatchNorm training step (forward + backward) on CPU: normlab's reference vs torch's kernel.

    Median ms per shape for backend="reference" and backend="torch", their ratio (target
    <= 1.5) and the max difference of outputs and gradients (a fast wrong result cannot pass).
    Same options and JSON as benchmarks/layers_cpu.py.

    Example: normlab bench layers --threads 1 --quick --out layers.json
    """
    from normlab.bench.layers_cpu import bench_layers_cpu

    bench_layers_cpu(threads=threads, repeats=repeats, quick=quick, out=str(out))


@bench_app.command("kernels")
@_user_errors
def bench_kernels(
    quick: bool = typer.Option(False, "--quick", help="float32 and bfloat16 rows only"),
    v4: bool = typer.Option(False, "--v4", help="then time the candidate knobs over the whole matrix"),
    sweep: bool = typer.Option(False, "--sweep", help="then time each candidate change alone on the rows >= 16 MB"),
    budget_s: Optional[float] = typer.Option(
        None, "--budget-s", help="skip the remaining --v4 rows and --sweep entries after this many seconds "
        "(listed as skipped in the JSON)"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="no GPU: every phase on CPU in Triton's interpreter, tiny shapes (checks "
        "results, measures nothing)"),
    out: Path = typer.Option(Path("bn_kernels.json"), "--out", help="the JSON result file"),
) -> None:
    """normlab's Triton BatchNorm vs torch on a CUDA GPU: GPU time, TB/s, % of copy bandwidth.

    Forward (training mode) and backward of torch.nn.functional.batch_norm and
    normlab.kernels.batch_norm over shapes x dtypes x layouts, GPU time from CUDA-graph replays
    with L2 flushed; then each forward kernel alone. Needs Triton and a CUDA GPU, or --dry-run.
    Same options and JSON as benchmarks/bn_kernels.py.

    Example: normlab bench kernels --quick --out bn_kernels.json

    Example: normlab bench kernels --dry-run --v4 --sweep
    """
    # Imported here: it loads torch, and a dry run must switch Triton to its interpreter before
    # normlab's kernels load.
    from normlab.bench.kernels.run import DryRunFailed
    from normlab.bench.kernels.run import bench_kernels as run_kernel_bench

    try:
        run_kernel_bench(quick=quick, v4=v4, sweep=sweep, budget_s=budget_s, dry_run=dry_run, out=out)
    except DryRunFailed as exc:
        _fail(str(exc), code=1)


def main() -> None:
    """Console entry point (`normlab`, `python -m normlab`)."""
    app(prog_name="normlab")


if __name__ == "__main__":
    sys.exit(main())
