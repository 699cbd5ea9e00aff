"""What every benchmark repeats: provenance, devices, threads, a fixed-width table, JSON out.

A benchmark result is only as good as what it says about where it ran, so every JSON carries
`provenance(device)`: torch / python versions, platform, the device's name (GPU name or CPU
model), torch's intra-op threads, CPU count and load, the git commit of the source, the time.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from normlab.experiments.errors import ConfigError
from normlab.experiments.execute import torch_threads  # re-exported: the one thread switch
from normlab.provenance import git_commit as source_commit


def git_commit(short: bool = False) -> str:
    """The commit of the checkout normlab's source lives in, '+dirty' when modified; 'unknown'
    for an installed wheel. `short`: the first 12 hex digits."""
    commit = source_commit()
    if commit is None:
        return "unknown"
    head, plus, dirty = commit.partition("+")
    return (head[:12] if short else head) + plus + dirty


def cpu_name() -> str:
    """The CPU model ('model name' in /proc/cpuinfo on Linux), else what `platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, the CPU model otherwise."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def provenance(device: torch.device) -> dict[str, Any]:
    """Where and with what a benchmark ran (JSON-ready); call it inside the timed settings,
    so `threads` is the count the benchmark used."""
    return {
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "commit": git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when there is one), 'cpu', 'cuda' or 'cuda:N' -> a device that exists here.

    Raises ConfigError (one message: expected, got, how to fix) for anything else, and for a
    CUDA device on a machine without one.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device: expected cpu, cuda, cuda:N or auto, got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name}: CUDA is not available on this machine (torch "
                f"{torch.__version__}, no GPU visible); use --device cpu or --device auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s) "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1}); pick one of those"
            )
    return device


def check_threads(threads: int | None) -> None:
    """`--threads`: None (torch's setting) or a positive count."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"--threads: expected a positive number of threads, got {threads!r}; "
                          "leave it out for torch's default")



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
        raise ConfigError(f"--out: expected a JSON file path, got the folder {str(path)!r}; "
                          f"give a file name, e.g. {str(path / 'result.json')!r}")
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
    "Column", "check_out", "check_threads", "cpu_name", "device_name", "git_commit", "header_line",
    "print_table", "provenance", "resolve_device", "row_line", "torch_threads", "write_json",
]
