"""What the kernel benchmark's jobs share: the matrix of cases, counted bytes, rows and summary.

Counted bytes: forward reads x for the statistics, then reads x and writes y (3 passes);
backward reads x and dy for the two sums, then reads x, dy and writes dx (5 passes). TB/s is
counted bytes over GPU time; "% copy" is that over the device-to-device copy bandwidth.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from normlab.kernels import launch

SHAPES_4D = [(256, 64, 32, 32), (128, 64, 56, 56), (64, 512, 7, 7), (64, 8, 256, 256)]
SHAPES_2D = [(8192, 512)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The dry run's matrix: odd sizes that exercise masks, one row per view kind.
DRY_MATRIX = [((4, 6, 5, 7), "bfloat16", "nchw"), ((4, 6, 5, 7), "bfloat16", "nhwc"), ((33, 12), "float32", "nc")]
PASSES = {"fwd": 3, "bwd": 5}
MB = 1e6
BIG_MB = 16  # the targets are about rows of this many MB or more
H100_SMS = 132  # the plans of GPU-less jobs (sweep plan, offline compiles) are an H100's

Case = tuple[tuple[int, ...], str, str]  # (shape, dtype name, layout: nchw | nhwc | nc)


def cases(quick: bool) -> list[Case]:
    """The rows of the matrix; `quick`: float32 and bfloat16 only."""
    dtypes = ["float32", "bfloat16"] if quick else list(DTYPES)
    rows = [(shape, dt, layout) for shape in SHAPES_4D for dt in dtypes for layout in ("nchw", "nhwc")]
    return rows + [(shape, dt, "nc") for shape in SHAPES_2D for dt in dtypes]


def key(shape, dt: str, layout: str) -> str:
    """A row's name in tables and JSON: '256x64x32x32 float32 nhwc'."""
    return f"{'x'.join(map(str, shape))} {dt} {layout}"


def mbytes(shape, dt: str) -> float:
    """The size of x in MB."""
    return math.prod(shape) * DTYPES[dt].itemsize / MB


def make_input(shape, dtype: torch.dtype, layout: str, device: str) -> torch.Tensor:
    """A standard-normal tensor in the row's dtype and layout (nhwc = channels-last)."""
    x = torch.randn(shape, device=device, dtype=torch.float32).to(dtype)
    return x.to(memory_format=torch.channels_last) if layout == "nhwc" else x


def view_and_size(shape, dt: str, layout: str) -> tuple[launch.View, int]:
    """The launchers' view of a row and its element size, without allocating (meta tensor)."""
    x = torch.empty(shape, dtype=DTYPES[dt], device="meta")
    if layout == "nhwc":
        x = x.to(memory_format=torch.channels_last)
    return launch.view_of(x), x.element_size()


def plan(case: Case, knobs: dict[str, launch.Knobs], sms: int = H100_SMS) -> launch.Tiles:
    """The launch plan of a row with `knobs` (per view kind) on `sms` SMs (0 = interpreter)."""
    v, es = view_and_size(*case)
    return launch.plan_tiles(v, es, sms, knobs[launch.view_kind(v, es)])


def tbps(nbytes: float, passes: int, ms: float) -> float:
    """Counted TB/s of `passes` over `nbytes` in `ms` milliseconds."""
    return passes * nbytes / (ms * 1e-3) / 1e12


def geomean(values) -> float:
    """Geometric mean of the values that are numbers (a failed capture gives NaN)."""
    values = [v for v in values if not math.isnan(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def make_row(r: dict, shape, dt: str, layout: str, copy_bw: float) -> tuple[dict, str]:
    """One result row (for JSON) and its table line, from `timing.bench_case`'s timings."""
    nbytes = mbytes(shape, dt) * MB
    row = {"shape": list(shape), "dtype": dt, "layout": layout, "mbytes": nbytes / MB, **r}
    line = f"{'x'.join(map(str, shape)):>16} {dt:>8} {layout:>4} {nbytes / MB:6.1f} |"
    for d, passes in PASSES.items():
        # Backward time is a difference of two timings (fwd + bwd minus fwd): on a tiny row
        # (the dry run's) noise can make it <= 0, which is no measurement: NaN, left out of the
        # geomeans like a failed capture, never a negative speed-up.
        t_n, t_t = (t if t > 0 else math.nan for t in (r["normlab"][f"{d}_gpu_ms"], r["torch"][f"{d}_gpu_ms"]))
        row[f"{d}_tbps"] = tbps(nbytes, passes, t_n)
        row[f"{d}_torch_tbps"] = tbps(nbytes, passes, t_t)
        row[f"{d}_pct_copy"] = 100 * row[f"{d}_tbps"] * 1e12 / copy_bw
        row[f"{d}_speedup"] = t_t / t_n
        # Tuning rows time GPU only: their eager speed-up is NaN (left out of the geomeans).
        row[f"{d}_speedup_eager"] = r["torch"].get(f"{d}_ms", math.nan) / r["normlab"].get(f"{d}_ms", math.nan)
        line += (
            f" {t_t * 1e3:7.1f}us {t_n * 1e3:5.1f}us {row[f'{d}_tbps']:5.2f} "
            f"{row[f'{d}_pct_copy']:4.0f} {row[f'{d}_speedup']:5.2f} "
            f"{row[f'{d}_speedup_eager']:5.2f} |"
        )
    return row, line + f" {r['rel_err']['y']:.1e}/{r['rel_err']['dx']:.1e}"


def summarize(rows: list[dict], copy_bw: float) -> dict[str, Any]:
    """The targets over the matrix (forward and backward entries both count): geomean
    speed-ups over torch, and how many entries of 16 MB or more reach 80% of copy bandwidth."""

    def pick(name, cond=lambda row: True):
        return [row[f"{d}_{name}"] for row in rows for d in PASSES if cond(row)]

    def bf16_nchw(row):
        return row["dtype"] == "bfloat16" and row["layout"] == "nchw"

    big = pick("pct_copy", lambda row: row["mbytes"] >= BIG_MB)
    return {
        "copy_tbps": copy_bw / 1e12,
        "geomean_speedup_gpu": geomean(pick("speedup")),
        "geomean_speedup_gpu_bf16_nchw": geomean(pick("speedup", bf16_nchw)),
        "geomean_speedup_eager": geomean(pick("speedup_eager")),
        "geomean_speedup_eager_bf16_nchw": geomean(pick("speedup_eager", bf16_nchw)),
        "min_pct_copy_ge_16MB": min(big) if big else None,
        "rows_ge_16MB_at_80pct": sum(p >= 80 for p in big),
        "rows_ge_16MB": len(big),
    }


class Clock:
    """Seconds since the benchmark started, against an optional budget (--budget-s)."""

    def __init__(self, budget_s: float | None):
        self.start, self.budget_s = time.perf_counter(), budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def out_of_time(self) -> bool:
        return self.budget_s is not None and self.elapsed() > self.budget_s
