"""The `normlab` command line (typer): study, run, sweep, ls, compare, export, report, data, bench.

This module declares the commands, their options and help; what a command does is in
`normlab.commands.<module>`, which `_command` imports when the command runs. That is the one
lazy import of the CLI: it keeps `normlab --help` and `normlab ls` free of torch, pandas and
matplotlib (tests/test_imports.py, benchmarks/startup.py).

Every command takes `--out DIR` (the results folder, default ./runs). A user mistake (bad
key, value, file, experiment name, argument) prints ONE message on stderr and exits with
code 2, without a traceback; tracebacks are kept for bugs.
"""

from __future__ import annotations

import functools
import importlib
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import typer

import normlab
from normlab._deprecated import RenamedWarning, renamed_argument
from normlab.commands.common import fail
from normlab.experiments.config import config_keys
from normlab.experiments.errors import UserError

if TYPE_CHECKING:  # the modules `_command` loads, for type checkers and the import-rule test
    from normlab.commands import bench, compare, data, export, ls, report, runs, study  # noqa: F401


def _command(module: str) -> ModuleType:
    """`normlab.commands.<module>`, imported now that its command runs (see the module doc)."""
    return importlib.import_module(f"normlab.commands.{module}")


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
    help="Benchmarks: each prints a table and writes JSON with its provenance (versions, device, threads, commit).",
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


def _show_renamed(
    message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None
) -> None:
    """warnings.showwarning for the CLI: a renamed name is one line on stderr."""
    if issubclass(category, RenamedWarning):
        typer.echo(f"normlab: warning: {message}", err=True)
    else:
        _SHOWWARNING(message, category, filename, lineno, file, line)


_SHOWWARNING = warnings.showwarning


def _user_errors(command: Callable) -> Callable:
    """Turn a UserError (and Ctrl-C) into one line on stderr and an exit code; print the
    deprecated names a command was given (a RenamedWarning) as one line each."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default", RenamedWarning)
                warnings.showwarning = _show_renamed
                return command(*args, **kwargs)
        except UserError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted; run the same command again to resume where it stopped", code=130)

    return wrapper


def _executor_option(backend: str | None, executor: str, default: str) -> str:
    """--executor, or the deprecated --backend (with a warning); both, differing: exit 2."""
    try:
        return renamed_argument("--backend", backend, "--executor", executor, default=default, where="")
    except TypeError:
        fail(
            f"--backend {backend} and --executor {executor}: --backend is the deprecated name of "
            "--executor; give --executor only"
        )


def _keys_epilog() -> str:
    return "Keys: " + ", ".join(config_keys())


@app.command(epilog=_keys_epilog())
@_user_errors
def run(
    args: list[str] | None = typer.Argument(None, help=ARGS_HELP, metavar="[CONFIG] [KEY=VALUE]..."),
    out: Path = typer.Option(Path("runs"), "--out", help=OUT_HELP),
    name: str | None = typer.Option(None, "--name", help="experiment name (default: the file's name, or 'run')"),
    as_json: bool = typer.Option(False, "--json", help="print the final metrics as one JSON object on stdout"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    nproc: int | None = typer.Option(
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
    _command("runs").run(args, out, name, as_json, quiet, nproc, retry_failed, threads)


@app.command(epilog=_keys_epilog())
@_user_errors
def sweep(
    args: list[str] | None = typer.Argument(None, help=ARGS_HELP, metavar="[EXPERIMENT] [KEY=VALUE]..."),
    out: Path = typer.Option(Path("runs"), "--out", help=OUT_HELP),
    name: str | None = typer.Option(None, "--name", help="experiment name (default: the file's `name:`, or 'sweep')"),
    executor: str = typer.Option("local", "--executor", help="local (in-process), process (--workers N) or ray"),
    workers: int = typer.Option(1, "--workers", help="worker processes (process) or runs in flight (ray)"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (default: start a local Ray)"),
    cpus_per_run: float = typer.Option(1.0, "--cpus-per-run", help="Ray: CPUs reserved per run"),
    gpus_per_run: float | None = typer.Option(
        None, "--gpus-per-run", help="Ray: GPUs per run (default 1 for device=cuda, or auto on a GPU cluster)"
    ),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="run again the runs stored as failed"),
    append: bool = typer.Option(
        False, "--append", help="add these runs to the experiment instead of redefining it as exactly these"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="list the runs and exit; nothing is written"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
    threads: int = typer.Option(
        1, "--threads", help=THREADS_HELP + "; per worker with --executor process (Ray: the cluster's setting)"
    ),
    backend: str | None = typer.Option(None, "--backend", hidden=True, help="the deprecated name of --executor"),
) -> None:
    """Run every combination of an experiment; finished runs are skipped, interrupted ones resume.

    Exit code 0 when every run has a result (finished or diverged), 1 when some failed or were
    interrupted (run the same command again to resume), 2 for bad input.

    Example: normlab sweep configs/mnist1d_norm_batch.yaml seed=0,1,2 --executor process --workers 2
    """
    executor = _executor_option(backend, executor, "local")
    _command("runs").sweep(
        args,
        out,
        name,
        executor,
        workers,
        address,
        cpus_per_run,
        gpus_per_run,
        retry_failed,
        append,
        dry_run,
        quiet,
        threads,
    )


@app.command("ls")
@_user_errors
def ls(
    experiment: str | None = typer.Argument(None, help="list this experiment's runs instead"),
    out: Path = typer.Option(Path("runs"), "--out", help=OUT_HELP),
    as_json: bool = typer.Option(False, "--json", help="print JSON for scripts"),
) -> None:
    """List the experiments in the results folder and how many runs are in each status.

    Example: normlab ls --out runs --json
    """
    _command("ls").ls(experiment, out, as_json)


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
    _command("compare").compare(experiment, out, metric)


@app.command()
@_user_errors
def export(
    experiment: str = typer.Argument(..., help="experiment name (see `normlab ls`)"),
    out: Path = typer.Option(Path("runs"), "--out", help=OUT_HELP),
    fmt: str = typer.Option("csv", "--format", help="csv, parquet, tensorboard or mlflow"),
    dest: str | None = typer.Option(
        None,
        "--dest",
        help="folder for the files (default: <out>/exports); for mlflow a tracking URI or a folder for mlflow.db",
    ),
) -> None:
    """Write an experiment's runs and metrics tables to <dest>/<experiment>_{runs,metrics}.<format>,
    or its runs (config as hyper-parameters, metrics with their steps) to TensorBoard event files
    (<dest>/tensorboard/<experiment>/<run>/) or an MLflow tracking store (default
    sqlite:///<dest>/mlflow.db), one tracker run per stored run.

    Example: normlab export mnist1d-norm-batch --format parquet
    Example: normlab export mnist1d-norm-batch --format tensorboard  (then tensorboard --logdir runs/exports/tensorboard)
    """
    _command("export").export(experiment, out, fmt, dest)


@app.command()
@_user_errors
def study(
    dataset: str = typer.Option("mnist1d", "--dataset", help="mnist1d (embedded) or a dataset on disk, e.g. cifar10"),
    quick: bool = typer.Option(False, "--quick", help="a smoke-test sized study (under a minute)"),
    out: Path = typer.Option(Path("runs"), "--out", help=OUT_HELP),
    executor: str = typer.Option("process", "--executor", help="local, process or ray"),
    workers: int = typer.Option(2, "--workers", help="worker processes (process executor); one torch thread each"),
    tier: str = typer.Option(
        "default", "--tier", help="default (about 6 min on 2 CPU cores) or full (every part, at most 30 min)"
    ),
    backend: str | None = typer.Option(None, "--backend", hidden=True, help="the deprecated name of --executor"),
) -> None:
    """Run the whole batch-norm study and write its report (HTML + Markdown + figures).

    Every variant runs at its own learning rate, selected on held-out training data, then 10
    evaluation seeds; see docs/study.md. `--tier full` adds the parts the default leaves out
    (listed at the end of the default report), reusing the default tier's runs.

    Example: normlab study --quick --out runs
    """
    executor = _executor_option(backend, executor, "process")
    _command("study").study(dataset, quick, out, executor, workers, tier)


@app.command()
@_user_errors
def report(
    experiment: str = typer.Argument(..., help="experiment name (see `normlab ls`)"),
    out: Path = typer.Option(Path("runs"), "--out", help=OUT_HELP),
) -> None:
    """Write the report (report.html, report.md, PNGs) of an experiment or a study from the store.

    Example: normlab report mnist1d-norm-batch --out runs
    """
    _command("report").report(experiment, out)


@data_app.command("info")
@_user_errors
def data_info(
    name: str = typer.Argument(..., help="dataset name, e.g. mnist1d or cifar10"),
    root: Path | None = typer.Option(None, "--root", help="data folder (default $NORMLAB_DATA)"),
    out: Path = typer.Option(Path("runs"), "--out", help="unused; accepted like every command"),
) -> None:
    """Show what is on disk for a dataset and what is missing (never downloads).

    Example: normlab data info cifar10
    """
    _command("data").info(name, root)


BENCH_THREADS_HELP = "torch intra-op threads during the benchmark, restored after (default: torch's; 1 on a shared CPU)"


@bench_app.command("loop")
@_user_errors
def bench_loop(
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto (CUDA when there is one)"),
    samples: int = typer.Option(
        50_000, "--samples", help="training images per epoch (50,000 = CIFAR-10's train split)"
    ),
    repeats: int = typer.Option(3, "--repeats", help="alternating timed repetitions per norm (the median is shown)"),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes of the seed-style loop"),
    norms: str = typer.Option("batch,none", "--norms", help="comma-separated norms, one table row each"),
    compile_model: bool = typer.Option(False, "--compile", help="engine: torch.compile (GPU)"),
    precision: str = typer.Option("fp32", "--precision", help="engine: fp32, or bf16 autocast (GPU)"),
    cuda_graph: bool = typer.Option(False, "--cuda-graph", help="engine: replay each step as one CUDA graph (GPU)"),
    threads: int | None = typer.Option(None, "--threads", help=BENCH_THREADS_HELP),
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
    _command("bench").loop(device, samples, repeats, workers, norms, compile_model, precision, cuda_graph, threads, out)


@bench_app.command("layers")
@_user_errors
def bench_layers(
    threads: int | None = typer.Option(None, "--threads", help=BENCH_THREADS_HELP),
    repeats: int = typer.Option(20, "--repeats", help="timed steps per shape and implementation (the median is shown)"),
    quick: bool = typer.Option(False, "--quick", help="two small shapes instead of five (a smoke test)"),
    out: Path = typer.Option(Path("layers_cpu.json"), "--out", help="the JSON result file"),
) -> None:
    """BatchNorm training step (forward + backward) on CPU: normlab's reference vs torch's kernel.

    Median ms per shape for impl="reference" and impl="torch", their ratio (target
    <= 1.5) and the max difference of outputs and gradients (a fast wrong result cannot pass).
    Same options and JSON as benchmarks/layers_cpu.py.

    Example: normlab bench layers --threads 1 --quick --out layers.json
    """
    _command("bench").layers(threads, repeats, quick, out)


@bench_app.command("kernels")
@_user_errors
def bench_kernels(
    quick: bool = typer.Option(False, "--quick", help="float32 and bfloat16 rows only"),
    v4: bool = typer.Option(False, "--v4", help="then time the candidate knobs over the whole matrix"),
    sweep: bool = typer.Option(False, "--sweep", help="then time each candidate change alone on the rows >= 16 MB"),
    budget_s: float | None = typer.Option(
        None,
        "--budget-s",
        help="skip the remaining --v4 rows and --sweep entries after this many seconds (listed as skipped in the JSON)",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="no GPU: every phase on CPU in Triton's interpreter, tiny shapes (checks results, measures nothing)",
    ),
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
    # (the bench module loads torch; a dry run switches Triton to its interpreter before
    # normlab's kernels load)
    _command("bench").kernels(quick, v4, sweep, budget_s, dry_run, out)


def main() -> None:
    """Console entry point (`normlab`, `python -m normlab`)."""
    app(prog_name="normlab")


if __name__ == "__main__":
    sys.exit(main())
