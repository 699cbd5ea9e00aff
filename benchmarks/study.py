"""Wall time of `normlab study` (the default study, or `--tier full`) and of `normlab study --quick`.

Each mode runs in a fresh subprocess on a fresh, empty results folder (so every run trains:
nothing is skipped from an earlier store), timing the whole command: imports, training, the
recalibration pass and the report. CPU time (user + system of the child) is reported next to
wall time, because on a shared machine wall time measures the neighbours too.

Targets: default <= 10 min, full tier <= 30 min, --quick <= 1 min, on a 2-core CPU (the study uses both cores: two
worker processes, one torch thread each). CPU time / 2 is what the default would take on an
idle 2-core machine; wall time above that is the neighbours'.

    PYTHONPATH=src python benchmarks/study.py [--quick-only | --default-only] [--tier full]
        [--keep DIR | --on DIR] [--out bench-out/study.json]

`--on DIR` runs in a folder that may already hold a store (e.g. a default study's): the row is
marked incremental, since the runs found there are reused, not timed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = {"quick": 60.0, "default": 600.0, "quick-full": 60.0, "full": 1800.0}


def time_study(
    quick: bool, dataset: str, keep: str | None = None, tier: str = "default", on: str | None = None
) -> dict:
    """Run the study in a child process on an empty folder; wall and CPU seconds. `keep`: a
    new folder to run in and keep (store and report), instead of a temporary one; `on`: a
    folder that may hold a store already (its runs are reused: an incremental time)."""
    if keep is not None and Path(keep).exists() and any(Path(keep).iterdir()):
        raise SystemExit(f"--keep {keep}: expected a new or empty folder (every run must train), got a non-empty one")
    folder = keep or on
    with (
        contextlib.nullcontext(folder) if folder else tempfile.TemporaryDirectory(prefix="normlab-study-bench-")
    ) as out:
        code = (
            "from normlab.study import run_study; "
            f"print(run_study(dataset={dataset!r}, quick={quick}, out={out!r}, tier={tier!r}))"
        )
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"the study failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        report = Path(proc.stdout.strip().splitlines()[-1]) / "report.html"
        if not report.exists():
            raise SystemExit(f"the study printed {proc.stdout!r} but wrote no report.html")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        parts = [line for line in proc.stdout.splitlines() if " runs " in line]
    mode = {
        (True, "default"): "quick",
        (False, "default"): "default",
        (True, "full"): "quick-full",
        (False, "full"): "full",
    }[quick, tier]
    return {
        "mode": mode,
        "wall_s": wall,
        "cpu_s": cpu,
        "target_s": TARGET_S[mode],
        "within_target": wall <= TARGET_S[mode],
        "incremental": on is not None and not quick,
        "parts": parts,
        "load_avg_1m_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-out/study.json", help="JSON result path")
    parser.add_argument("--quick-only", action="store_true", help="time only `--quick`")
    parser.add_argument("--default-only", action="store_true", help="time only the default study")
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--tier", default="default", choices=("default", "full"))
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--keep", default=None, help="run the (non-quick) study in this new folder and keep it")
    where.add_argument("--on", default=None, help="run the (non-quick) study in this folder, reusing its store")
    args = parser.parse_args()

    rows = [] if args.default_only else [time_study(True, args.dataset, tier=args.tier)]
    if not args.quick_only:
        rows.append(time_study(False, args.dataset, keep=args.keep, tier=args.tier, on=args.on))
    print(f"{'mode':<11} {'wall s':>8} {'cpu s':>8} {'cpu s / 2':>10} {'target s':>9}  ok  (load avg after)")
    for row in rows:
        mode = row["mode"] + (" (+)" if row["incremental"] else "")
        print(
            f"{mode:<11} {row['wall_s']:8.1f} {row['cpu_s']:8.1f} {row['cpu_s'] / 2:10.1f} "
            f"{row['target_s']:9.0f}  {'yes' if row['within_target'] else 'NO '} ({row['load_avg_1m_after']:.1f})"
        )
        for line in row["parts"]:
            print(f"    {line}")
    provenance = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "dataset": args.dataset,
    }
    try:
        import torch

        provenance["torch"] = torch.__version__
    except ImportError:
        pass
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"provenance": provenance, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
