"""How fast the CLI starts: `normlab --help` and `normlab ls` vs `python -c "import torch"`.

Target: both CLI commands under a quarter of torch's import time on the same machine, in the
same run. Each command runs in a fresh interpreter (this checkout's src/ first on the path),
once untimed to warm the file cache, then `--repeats` times, round-robin so that load on a
shared machine hits every command alike; the table shows the median wall time.

    PYTHONPATH=src python benchmarks/startup.py [--repeats 7] [--out startup.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from normlab.bench.common import Column, check_out, print_table, provenance, write_json
from normlab.experiments.store import Store

SRC = Path(__file__).resolve().parents[1] / "src"
TARGET = 0.25  # CLI start-up / torch import, at most


def commands(results: Path) -> dict[str, list[str]]:
    """name -> argv; `results` is an empty results folder for `ls`."""
    python = sys.executable
    return {
        "python -c pass": [python, "-c", "pass"],  # the interpreter alone: the floor
        "normlab --help": [python, "-m", "normlab", "--help"],
        "normlab ls": [python, "-m", "normlab", "ls", "--out", str(results)],
        "import torch": [python, "-c", "import torch"],
    }


def time_once(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one run; a failing command is a broken benchmark, not a data point."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"startup: {' '.join(argv[1:])} exited {proc.returncode}: {proc.stderr.strip()}")
    return seconds


def bench_startup(repeats: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory() as tmp:
        Store.open(tmp).close()  # an empty results store: `ls` lists nothing and exits 0
        argvs = commands(Path(tmp))
        for argv in argvs.values():
            time_once(argv, env)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in argvs}
        for _ in range(repeats):
            for name, argv in argvs.items():
                times[name].append(time_once(argv, env))
    torch_s = statistics.median(times["import torch"])
    rows = [
        {
            "command": name,
            "median_s": statistics.median(ts),
            "min_s": min(ts),
            "max_s": max(ts),
            "vs_torch": statistics.median(ts) / torch_s,
            "times_s": ts,
        }
        for name, ts in times.items()
    ]
    met = all(row["vs_torch"] < TARGET for row in rows if row["command"].startswith("normlab"))
    return {
        "provenance": provenance(torch.device("cpu")),
        "repeats": repeats,
        "target": f"normlab --help and ls < {TARGET} x import torch",
        "met": met,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per command (median shown)")
    parser.add_argument("--out", default="startup.json", help="the JSON result file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats: expected a positive count, got {args.repeats}")
    out = check_out(args.out)
    result = bench_startup(args.repeats)
    print_table(
        [
            Column("command", "command", 16, "", align="<"),
            Column("median", "median_s", 8, ".3f", " s"),
            Column("min", "min_s", 8, ".3f", " s"),
            Column("max", "max_s", 8, ".3f", " s"),
            Column("/ torch", "vs_torch", 8, ".2f"),
        ],
        result["rows"],
    )
    print(f"target {result['target']}: {'met' if result['met'] else 'NOT met'}")
    write_json(result, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
