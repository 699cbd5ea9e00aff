"""Timing: torch's batch_norm vs normlab's Triton kernels over the matrix, and kernel by kernel.

GPU time comes from CUDA-graph replays with L2 flushed (what the kernels cost inside a captured
training step); eager time is `triton.testing.do_bench`'s median (Python and launches
included). A dry run (`Target("cpu")`, Triton's interpreter) takes one call's wall time for
both: it checks the plumbing and the results, not the speed.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from normlab.bench.kernels.matrix import (
    BIG_MB,
    DRY_MATRIX,
    DTYPES,
    H100_SMS,
    Case,
    cases,
    key,
    make_input,
    make_row,
    tbps,
)
from normlab.kernels import batch_norm, launch
from normlab.kernels import triton_bn as k

IMPLS = {"torch": F.batch_norm, "normlab": batch_norm}
# Shapes whose forward kernels are timed one by one on the GPU (the dry run takes its matrix).
BREAKDOWN_CASES = [
    ((256, 64, 32, 32), "float32", "nchw"),
    ((256, 64, 32, 32), "float32", "nhwc"),
    ((128, 64, 56, 56), "bfloat16", "nhwc"),
    ((8192, 512), "float32", "nc"),
]
_FLUSH: torch.Tensor | None = None  # 256 MB zeroed before each timed call: inputs never sit in L2


@dataclass(frozen=True)
class Target:
    """Where the benchmark runs: "cuda", or "cpu" for the dry run in Triton's interpreter."""

    device: str

    @property
    def dry(self) -> bool:
        return self.device == "cpu"

    def matrix(self, quick: bool) -> list[Case]:
        return DRY_MATRIX if self.dry else cases(quick)

    @property
    def sms(self) -> int:
        """SMs the sweep plans for (0: the interpreter's plans)."""
        return 0 if self.dry else H100_SMS

    @property
    def min_mb(self) -> float:
        """The smallest row the sweep times (every row in a dry run)."""
        return 0.0 if self.dry else BIG_MB

    def copy_bandwidth(self) -> float:
        """Bytes read + written per second by a 1 GiB device-to-device copy (1 TB/s when dry)."""
        if self.dry:
            return 1e12
        src = torch.randn(256 * 2**20, device=self.device)
        dst = torch.empty_like(src)
        ms = do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")
        return 2 * src.numel() * src.element_size() / (ms * 1e-3)

    def eager_ms(self, fn: Callable) -> float:
        return wall_ms(fn) if self.dry else do_bench(fn, warmup=10, rep=60, return_mode="median")

    def gpu_ms(self, fn: Callable) -> float:
        return wall_ms(fn) if self.dry else graph_ms(fn)


def graph_ms(fn: Callable, reps: int = 10, replays: int = 5) -> float:
    """GPU time of fn alone: CUDA-graph replays of [flush L2, fn] minus replays of [flush].

    Replaying a graph removes the Python and launch overhead that eager timing includes, so this
    is what the kernels cost inside a captured training step. Returns NaN if capture fails.
    """
    global _FLUSH
    if _FLUSH is None:
        _FLUSH = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")

    def timed(body):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                body()  # warm up (allocator, autograd) outside the capture
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(reps):
                body()
        g.replay()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            g.replay()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / (replays * reps)

    try:
        with_fn = timed(lambda: (_FLUSH.zero_(), fn()))
        flush_only = timed(lambda: _FLUSH.zero_())
    except Exception as e:  # a capture problem must not lose the eager numbers
        print(f"  graph timing failed: {type(e).__name__}: {e}", flush=True)
        return float("nan")
    return with_fn - flush_only


def wall_ms(fn: Callable) -> float:
    """The dry run's stand-in for both timings (CPU, no graphs): one call's wall time."""
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def bench_case(
    target: Target, shape, dtype: torch.dtype, layout: str, impls=IMPLS, eager: bool = True, timed=None
) -> dict:
    """Times and checks one row: {impl: {fwd_ms, bwd_ms, fwd_gpu_ms, bwd_gpu_ms}} plus the
    relative errors of normlab vs torch (`rel_err`: y, dx, dw, db).

    *_ms: eager; *_gpu_ms: CUDA-graph replays (kernels only). `eager=False` skips the eager
    timings; `timed`: the impls to time (all by default), the others run once for the check.
    """
    dev = target.device
    C = shape[1]
    x = make_input(shape, dtype, layout, dev).requires_grad_()
    dy = make_input(shape, dtype, layout, dev)
    w = torch.randn(C, device=dev).abs().add_(0.5).requires_grad_()
    b = torch.randn(C, device=dev).requires_grad_()
    out, ys = {}, {}
    for name, fn in impls.items():
        rm, rv = torch.zeros(C, device=dev), torch.ones(C, device=dev)
        fwd = functools.partial(fn, x, rm, rv, w, b, True, 0.1, 1e-5)
        y = fwd()
        ys[name] = (y.detach(), torch.autograd.grad(y, (x, w, b), dy))
        del y  # free the eager autograd graph before a capture (its nodes live on the default stream)
        if timed is None or name in timed:
            out[name] = _eager_times(target, fwd, (x, w, b), dy) if eager else {}
            # Backward ops run on their forward's stream, so the captured body must run the
            # forward too: backward GPU time = graph(fwd + bwd) - graph(fwd).
            fwd_gpu = target.gpu_ms(fwd)
            out[name]["fwd_gpu_ms"] = fwd_gpu
            out[name]["bwd_gpu_ms"] = target.gpu_ms(lambda fwd=fwd: torch.autograd.grad(fwd(), (x, w, b), dy)) - fwd_gpu
    if "torch" not in ys:
        return out
    # Correctness at full size: normlab vs torch (both approximate the same math).
    (y_t, g_t), (y_n, g_n) = ys["torch"], ys["normlab"]

    def rel(a, r):
        return ((a.float() - r.float()).norm() / r.float().norm().clamp_min(1e-30)).item()

    out["rel_err"] = {
        "y": rel(y_n, y_t),
        "dx": rel(g_n[0], g_t[0]),
        "dw": rel(g_n[1], g_t[1]),
        "db": rel(g_n[2], g_t[2]),
    }
    return out


def _eager_times(target: Target, fwd: Callable, params: tuple, dy: torch.Tensor) -> dict:
    """Eager forward and backward ms (Python and launches included); the forward's autograd
    graph is freed on return."""
    y = fwd()
    return {
        "fwd_ms": target.eager_ms(fwd),
        "bwd_ms": target.eager_ms(lambda: torch.autograd.grad(y, params, dy, retain_graph=True)),
    }


def run_matrix(target: Target, matrix: list[Case], copy_bw: float) -> list[dict]:
    """The adopted kernels vs torch over the matrix: prints the table, returns the rows."""
    print(
        "times are GPU time (CUDA-graph replays, L2 flushed); TB/s and % of copy bandwidth "
        "count 3 passes forward, 5 backward; x = speed-up over torch on GPU time, "
        "(eager x) = speed-up with Python and launch overhead included"
    )
    print(
        f"{'shape':>16} {'dtype':>8} {'lay':>4} {'MB':>6} | {'fwd torch':>9} {'ours':>7} "
        f"{'TB/s':>5} {'%cp':>4} {'x':>5} {'(eag)':>5} | {'bwd torch':>9} {'ours':>7} "
        f"{'TB/s':>5} {'%cp':>4} {'x':>5} {'(eag)':>5} | rel err y/dx"
    )
    rows = []
    for shape, dt, layout in matrix:
        row, line = make_row(bench_case(target, shape, DTYPES[dt], layout), shape, dt, layout, copy_bw)
        rows.append(row)
        print(line, flush=True)
    return rows


def kernel_breakdown(target: Target, case: Case, knobs=None) -> dict:
    """GPU time of each forward kernel (stats, finalize, apply) on one row: where time goes.
    `knobs`: one `launch.Knobs` per view kind (default: the adopted `launch.KNOBS`)."""
    shape, dt, layout = case
    x = launch.make_dense(make_input(shape, DTYPES[dt], layout, target.device))
    C, v, es = shape[1], launch.view_of(x), x.element_size()
    knobs = knobs or launch.KNOBS
    sms = 0 if target.dry else launch._sm_count(x.device)
    t = launch.plan_tiles(v, es, sms, knobs[launch.view_kind(v, es)])
    part = torch.empty(2, t.split, C, device=target.device)
    stats = torch.empty(4, C, device=target.device)
    y = torch.empty_like(x)
    grid = launch._grid(v, t)
    meta = dict(BLOCK_C=t.block_c, BLOCK_S=t.block_s, num_warps=t.num_warps, num_stages=t.num_stages)
    fns = {
        "stats": lambda: k._stats_kernel[grid](
            x, part, *launch._common(v, t), t.split, UNROLL=t.stats_unroll, STAGES=t.stats_stages, **meta
        ),
        "finalize": lambda: k._finalize_kernel[launch._fin_grid(v, t)](
            x,
            part,
            stats,
            stats,
            stats,
            stats,
            stats,
            C,
            v.sc,
            t.split,
            float(v.count),
            0.1,
            1e-5,
            1.0,
            HAS_W=False,
            HAS_B=False,
            UPDATE_RUNNING=False,
            BLOCK=t.fin_block,
            BLOCK_P=t.fin_rows,
        ),
        "apply": lambda: k._apply_kernel[grid](x, y, stats, *launch._common(v, t), RELU=False, **meta),
    }
    res = {"shape": list(shape), "dtype": dt, "layout": layout, "tiles": dataclasses.asdict(t)}
    for name, fn in fns.items():
        ms = target.gpu_ms(fn)
        res[f"{name}_us"] = ms * 1e3
        passes = {"stats": 1, "apply": 2}.get(name)  # the finalize reads no x
        if passes:
            res[f"{name}_tbps"] = tbps(x.numel() * es, passes, ms)
    print(
        "  "
        + " ".join(
            f"{name}={val:.2f}" if isinstance(val, float) else f"{name}={val}"
            for name, val in res.items()
            if name != "tiles"
        )
        + f" {t}",
        flush=True,
    )
    return res


def breakdowns(target: Target, matrix: list[Case], knobs=None) -> list[dict]:
    """kernel_breakdown of BREAKDOWN_CASES on a GPU (of the dry run's matrix on CPU); a failure
    is recorded in its entry, not raised (the run goes on)."""
    out = []
    for case in matrix if target.dry else BREAKDOWN_CASES:
        try:
            out.append(kernel_breakdown(target, case, knobs))
        except Exception as e:
            shape, dt, layout = case
            print(f"  breakdown {key(*case)} FAILED {type(e).__name__}: {e}")
            out.append({"shape": list(shape), "dtype": dt, "layout": layout, "error": f"{type(e).__name__}: {e}"})
    return out


__all__ = [
    "BREAKDOWN_CASES",
    "IMPLS",
    "Target",
    "bench_case",
    "breakdowns",
    "graph_ms",
    "kernel_breakdown",
    "run_matrix",
    "wall_ms",
]
