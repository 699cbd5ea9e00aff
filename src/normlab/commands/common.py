"""What the commands share: the one-line error, experiment arguments, failed-run lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer

from normlab.experiments.config import Experiment, load_experiment
from normlab.experiments.errors import ConfigError


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `normlab: error: message` on stderr and exit with `code` (2: the user's mistake)."""
    typer.echo(f"normlab: error: {message}", err=True)
    raise typer.Exit(code)


def split_args(args: list[str] | None) -> tuple[Path | None, list[str]]:
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


def load_args(args: list[str] | None, name: str | None) -> Experiment:
    """The experiment that `[file] key=value...` describes."""
    path, overrides = split_args(args)
    return load_experiment(path, overrides, name=name)


def print_failures(summary: Any) -> None:
    """One line on stderr per run that failed in this sweep: its last error line."""
    for outcome in summary.outcomes:
        if outcome.status == "failed" and not outcome.skipped and outcome.error:
            last = outcome.error.strip().splitlines()[-1]
            typer.echo(f"  run {outcome.run_id} failed: {last}", err=True)


__all__ = ["fail", "load_args", "print_failures", "split_args"]
