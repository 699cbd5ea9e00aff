"""What every benchmark repeats: provenance, devices, threads, a fixed-width table, JSON out.

A benchmark result is only as good as what it says about where it ran, so every JSON carries
`provenance(device)`: the keys a run stores (python, torch and normlab versions, source commit,
the device and its hardware, host, torch's intra-op threads) plus platform, CPU count, load
and time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from normlab import device
from normlab.experiments.errors import ConfigError
from normlab.experiments.execute import torch_threads  # re-exported: the one thread switch
from normlab.provenance import environment, machine
from normlab.provenance import git_commit as source_commit


def git_commit(short: bool = False) -> str:
    """The commit of the checkout normlab's source lives in, '+dirty' when modified; 'unknown'
    for an installed wheel. `short`: the first 12 hex digits."""
    commit = source_commit()
    if commit is None:
        return "unknown"
    head, plus, dirty = commit.partition("+")
    return (head[:12] if short else head) + plus + dirty


def provenance(device: torch.device) -> dict[str, Any]:
    """Where and with what a benchmark ran (JSON-ready): a run's keys (`normlab.provenance.
    environment`) plus the machine's load and the time. Call it inside the timed settings, so
    `torch_threads` is the count the benchmark used."""
    return environment(str(device)) | machine()


def resolve_device(name: str) -> torch.device:
    """`--device`: `normlab.device.resolve_device`, its error as a ConfigError (exit code 2)."""
    try:
        return device.resolve_device(name)
    except ValueError as exc:
        raise ConfigError(f"--device: {exc}") from None


def check_threads(threads: int | None) -> None:
    """`--threads`: None (torch's setting) or a positive count."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(
            f"--threads: expected a positive number of threads, got {threads!r}; leave it out for torch's default"
        )


@dataclass(frozen=True)
class Column:
    """One table column: `row[key]` formatted with `fmt` plus `suffix`, aligned in `width`."""

    header: str
    key: str
    width: int
    fmt: str = ".3f"
    suffix: str = ""
    align: str = ">"

    @property
    def size(self) -> int:
        return max(self.width, len(self.header))  # a header never runs into its neighbour


def header_line(columns: Iterable[Column]) -> str:
    """The header row of a table, columns separated by one space."""
    return " ".join(f"{c.header:{c.align}{c.size}}" for c in columns)


def row_line(columns: Iterable[Column], row: Mapping[str, Any]) -> str:
    """One row of a table (values formatted by their column)."""
    return " ".join(f"{format(row[c.key], c.fmt) + c.suffix:{c.align}{c.size}}" for c in columns)


def print_table(columns: list[Column], rows: Iterable[Mapping[str, Any]]) -> None:
    """Print a header and one line per row on stdout."""
    print(header_line(columns))
    for row in rows:
        print(row_line(columns, row))


def check_out(path: str | os.PathLike) -> Path:
    """`--out`: a file path (checked before a benchmark runs, not after minutes of timing)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"--out: expected a JSON file path, got the folder {str(path)!r}; "
            f"give a file name, e.g. {str(path / 'result.json')!r}"
        )
    return path


def write_json(result: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write `result` as indented JSON to `path` (parent folders created); says where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"wrote {path}")
    return path


__all__ = [
    "Column",
    "check_out",
    "check_threads",
    "git_commit",
    "header_line",
    "print_table",
    "provenance",
    "resolve_device",
    "row_line",
    "torch_threads",
    "write_json",
]
