"""Tuning: candidate knob changes timed against the adopted knobs (`launch.KNOBS`).

The statistics kernel reads at 1.3-2.0 TB/s on an H100 where the apply kernels reach 2.6-2.7
and the two-stream backward reduce ~2.8, so the candidates put more bytes in flight (a second
tile per loop step, or a pipelined loop); the rows-view finalize (cdiv(C, 32) programs) gets
4x the programs. `--v4` times the candidate set `V4_KNOBS` over the whole matrix; `--sweep`
times each `V4_CHANGES` entry alone on the large rows, so a change is adopted per view kind on
evidence (copied into `launch.KNOBS`). benchmarks/README.md has the measurements and rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, replace

from normlab.bench.kernels.matrix import (
    BIG_MB,
    DTYPES,
    H100_SMS,
    MB,
    PASSES,
    Case,
    Clock,
    key,
    make_row,
    mbytes,
    plan,
    tbps,
)
from normlab.bench.kernels.timing import IMPLS, Target, bench_case
from normlab.kernels import batch_norm, launch

# Each change: (knob values, the view kinds it applies to).
V4_CHANGES = {
    "unroll": (dict(stats_unroll=2, bwd_unroll=2), ("planes", "rows", "rows16")),
    "stages": (dict(stats_stages=3, bwd_stages=3), ("planes", "rows", "rows16")),
    "finalize": (dict(finalize_channels=8, finalize_rows=256), ("rows", "rows16")),
    # Few channels make tall rows tiles ([8, 1024] for C=8 float32) that need ~200 registers
    # per thread: one program per SM where the plan wants two; 512 rows keep two.
    "rows_cap": (dict(rows_cap=512), ("rows",)),
}
# The candidate set: the statistics kernel unrolled (no shared memory, so no occupancy risk),
# the rows-view finalize and the float32 rows cap.
V4_KNOBS = {
    "planes": replace(launch.KNOBS["planes"], stats_unroll=2),
    "rows": replace(launch.KNOBS["rows"], stats_unroll=2, finalize_channels=8, finalize_rows=256, rows_cap=512),
    "rows16": replace(launch.KNOBS["rows16"], stats_unroll=2, finalize_channels=8, finalize_rows=256),
}
# float16 tracked bfloat16 within ~2% on every measured row, so the sweep times these two.
SWEEP_DTYPES = ("float32", "bfloat16")
# Most promising (and cheapest) first: a budget cuts the tail.
SWEEP_ORDER = ("unroll", "rows_cap", "finalize", "stages")


def knobs_with(change: str) -> dict[str, launch.Knobs]:
    """`launch.KNOBS` with one `V4_CHANGES` entry applied, or the candidate set ("v4")."""
    if change == "v4":
        return dict(V4_KNOBS)
    if change not in V4_CHANGES:
        raise ValueError(f"unknown v4 change {change!r}; expected one of {sorted(V4_CHANGES) + ['v4']}")
    values, kinds = V4_CHANGES[change]
    return {kind: replace(knobs, **values) if kind in kinds else knobs for kind, knobs in launch.KNOBS.items()}


def sweep_plan(matrix: list[Case], sms: int = H100_SMS, min_mb: float = BIG_MB, dtypes=SWEEP_DTYPES) -> list[dict]:
    """The sweep's entries in the order they run: each change (`SWEEP_ORDER`) on each matrix row
    of `min_mb` or more in `dtypes` whose launch plan on `sms` SMs it changes (a change that
    leaves a row's plan alone, e.g. the rows-view finalize on NCHW, would only re-time it)."""
    entries = []
    for change in SWEEP_ORDER:
        knobs = knobs_with(change)
        for case in matrix:
            shape, dt, layout = case
            if mbytes(shape, dt) >= min_mb and dt in dtypes and plan(case, knobs, sms) != plan(case, launch.KNOBS, sms):
                entries.append({"change": change, "shape": shape, "dtype": dt, "layout": layout})
    return entries


def _failed(entry: dict, e: Exception) -> dict:
    """The entry with its error: one bad config (e.g. out of shared memory) must not cost the
    rest of the run."""
    entry["error"] = f"{type(e).__name__}: {e}"
    print(f"  {key(entry['shape'], entry['dtype'], entry['layout'])}: FAILED {entry['error'][:200]}", flush=True)
    return entry


def run_v4(
    target: Target, matrix: list[Case], rows: list[dict], copy_bw: float, clock: Clock, on_row: Callable
) -> tuple[list[dict], list[str]]:
    """normlab with `V4_KNOBS` over the matrix (GPU time; torch's times are the main table's),
    side by side with the adopted knobs ("now"). Returns (rows, skipped); the budget skips the
    rest."""
    base = {key(r["shape"], r["dtype"], r["layout"]): r for r in rows}
    print(f"v4 candidate knobs: { {kind: asdict(v) for kind, v in V4_KNOBS.items()} }")
    print(
        f"{'shape':>16} {'dtype':>8} {'lay':>4} | {'fwd now':>8} {'v4':>7} {'TB/s':>5} "
        f"{'%cp':>4} {'x':>5} {'chg':>5} | {'bwd now':>8} {'v4':>7} {'TB/s':>5} {'%cp':>4} "
        f"{'x':>5} {'chg':>5} | rel err y/dx"
    )
    v4_rows, skipped = [], []
    for shape, dt, layout in matrix:
        name = key(shape, dt, layout)
        if clock.out_of_time():
            skipped.append(name)
            continue
        try:
            with launch.using_knobs(V4_KNOBS):
                r = bench_case(target, shape, DTYPES[dt], layout, IMPLS, eager=False, timed={"normlab"})
        except Exception as e:
            v4_rows.append(_failed({"shape": list(shape), "dtype": dt, "layout": layout}, e))
            on_row(v4_rows, skipped)
            continue
        r["torch"] = base[name]["torch"]
        row, _ = make_row(r, shape, dt, layout, copy_bw)
        v4_rows.append(row)
        line = f"{'x'.join(map(str, shape)):>16} {dt:>8} {layout:>4} |"
        for d in PASSES:
            t_old, t_new = base[name]["normlab"][f"{d}_gpu_ms"], r["normlab"][f"{d}_gpu_ms"]
            line += (
                f" {t_old * 1e3:6.1f}us {t_new * 1e3:5.1f}us {row[f'{d}_tbps']:5.2f} "
                f"{row[f'{d}_pct_copy']:4.0f} {row[f'{d}_speedup']:5.2f} "
                f"{100 * (t_old / t_new - 1):+4.0f}% |"
            )
        print(line + f" {r['rel_err']['y']:.1e}/{r['rel_err']['dx']:.1e}", flush=True)
        on_row(v4_rows, skipped)
    return v4_rows, skipped


def run_sweep(
    target: Target, entries: list[dict], rows: list[dict], clock: Clock, on_entry: Callable
) -> tuple[list[dict], list[str]]:
    """Each `sweep_plan` entry: normlab's fwd/bwd TB/s with that one change (`*_tbps`), next to
    the adopted knobs' from the main table (`*_tbps_adopted`). Returns (entries, skipped)."""
    base = {key(r["shape"], r["dtype"], r["layout"]): r for r in rows}
    print(f"sweep: {len(entries)} entries, each change alone; TB/s from GPU time, adopted = the main table's")
    done, skipped = [], []
    for p in entries:
        name = key(p["shape"], p["dtype"], p["layout"])
        if clock.out_of_time():
            skipped.append(f"{p['change']}: {name}")
            continue
        entry = {**p, "shape": list(p["shape"])}
        try:
            with launch.using_knobs(knobs_with(p["change"])):
                r = bench_case(
                    target, p["shape"], DTYPES[p["dtype"]], p["layout"], {"normlab": batch_norm}, eager=False
                )
            for d, passes in PASSES.items():
                entry[f"{d}_tbps"] = tbps(mbytes(p["shape"], p["dtype"]) * MB, passes, r["normlab"][f"{d}_gpu_ms"])
                entry[f"{d}_tbps_adopted"] = base[name][f"{d}_tbps"] if name in base else math.nan
            print(
                f"  {p['change']:>8} {name:>30}: fwd {entry['fwd_tbps_adopted']:.2f} -> "
                f"{entry['fwd_tbps']:.2f}  bwd {entry['bwd_tbps_adopted']:.2f} -> "
                f"{entry['bwd_tbps']:.2f} TB/s  (t={clock.elapsed():.0f}s)",
                flush=True,
            )
        except Exception as e:
            _failed(entry, e)
        done.append(entry)
        on_entry(done, skipped)
    return done, skipped


__all__ = ["SWEEP_DTYPES", "SWEEP_ORDER", "V4_CHANGES", "V4_KNOBS", "knobs_with", "run_sweep", "run_v4", "sweep_plan"]
