"""BatchNorm training step, torch vs normlab's Triton kernels, against the copy-bandwidth limit.

Measures the device copy bandwidth (bytes read + written), then for each shape x dtype x layout
times forward (training mode, running stats updated) and backward (dx, dweight, dbias) of
``torch.nn.functional.batch_norm`` and ``normlab.kernels.batch_norm``: GPU time from CUDA-graph
replays with L2 flushed, and eager ``triton.testing.do_bench`` medians. Counted bytes: forward
3 passes over x (read for statistics, read + write to apply), backward 5 (read x, dy; read x,
dy + write dx). Prints tables and writes JSON (after every phase, so a time-out keeps the rest).

    PYTHONPATH=src python benchmarks/bn_kernels.py --out bn_kernels.json [--quick] [--v4]
        [--sweep] [--budget-s SECONDS]
    python benchmarks/bn_kernels.py --dry-run [--v4] [--sweep]   # CPU smoke test (interpreter)
    PYTHONPATH=src python benchmarks/bn_kernels.py --resources [--quick]  # CPU, no GPU needed

--v4 times normlab again over the whole matrix with ``launch.V4_KNOBS`` (the v4 candidate),
side by side with the shipped knobs (v3.1). --sweep times each ``launch.V4_CHANGES`` entry alone
on the >= 16 MB rows, so the next version can adopt each change per view kind on evidence.
--resources compiles the reduction kernels of all those plans for an H100 (sm_90) offline and
reports registers, spills and shared memory: what can be checked before a GPU run.
"""

import argparse
import dataclasses
import json
import math
import platform
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

SHAPES_4D = [(256, 64, 32, 32), (128, 64, 56, 56), (64, 512, 7, 7), (64, 8, 256, 256)]
SHAPES_2D = [(8192, 512)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MB = 1e6
DEV = "cuda"  # --dry-run switches to the CPU interpreter
H100_SMS = 132  # plans for the sweep's "does this change touch this row" test
SWEEP_MIN_MB = 16  # the targets are on shapes of 16 MB or more
# float16 tracked bfloat16 within ~2% on every v3 row, so the sweep times float32 and bfloat16.
SWEEP_DTYPES = ("float32", "bfloat16")
# Most promising (and cheapest) first: a budget cuts the tail.
SWEEP_ORDER = ("unroll", "rows_cap", "finalize", "stages")


def cases(quick: bool):
    """(shape, dtype name, layout) rows of the matrix."""
    dtypes = ["float32", "bfloat16"] if quick else ["float32", "bfloat16", "float16"]
    for shape in SHAPES_4D:
        for dt in dtypes:
            for layout in ("nchw", "nhwc"):
                yield shape, dt, layout
    for shape in SHAPES_2D:
        for dt in dtypes:
            yield shape, dt, "nc"


def key(shape, dt, layout) -> str:
    return f"{'x'.join(map(str, shape))} {dt} {layout}"


def mbytes(shape, dt) -> float:
    return math.prod(shape) * DTYPES[dt].itemsize / MB


def copy_bandwidth(do_bench) -> float:
    """Bytes read + written per second by a 1 GiB device-to-device copy."""
    src = torch.randn(256 * 2**20, device=DEV)
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")
    return 2 * src.numel() * src.element_size() / (ms * 1e-3)


_FLUSH = None  # 256 MB buffer zeroed before each timed call so inputs never sit in L2 (50 MB)


def graph_ms(fn, reps: int = 10, replays: int = 5) -> float:
    """GPU time of fn alone: CUDA-graph replays of [flush L2, fn] minus replays of [flush].

    Replaying a graph removes the Python and launch overhead that eager timing includes, so this
    is what the kernels cost inside a captured training step. Returns NaN if capture fails.
    """
    global _FLUSH
    if _FLUSH is None:
        _FLUSH = torch.empty(256 * 2**20, dtype=torch.int8, device=DEV)

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


def wall_ms(fn) -> float:
    """--dry-run's stand-in for graph_ms (CPU, no graphs): one call's wall time."""
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def _make(shape, dtype, layout):
    x = torch.randn(shape, device=DEV, dtype=torch.float32).to(dtype)
    if layout == "nhwc":
        x = x.to(memory_format=torch.channels_last)
    return x


def bench_case(shape, dtype, layout, do_bench, impls, eager=True, timed=None):
    """Times and checks one row: {impl: {fwd_ms, bwd_ms, fwd_gpu_ms, bwd_gpu_ms}} plus
    relative errors of normlab vs torch. *_ms: eager (do_bench median, Python and launches
    included); *_gpu_ms: CUDA-graph replays (kernels only). ``timed``: the impls to time (all
    by default); the others only run once, for the error check."""
    gpu_ms = graph_ms if DEV == "cuda" else wall_ms
    C = shape[1]
    x = _make(shape, dtype, layout).requires_grad_()
    dy = _make(shape, dtype, layout)
    w = torch.randn(C, device=DEV).abs().add_(0.5).requires_grad_()
    b = torch.randn(C, device=DEV).requires_grad_()
    out = {}
    ys = {}
    for name, fn in impls.items():
        rm, rv = torch.zeros(C, device=DEV), torch.ones(C, device=DEV)

        def fwd():
            return fn(x, rm, rv, w, b, True, 0.1, 1e-5)

        y = fwd()
        grads = torch.autograd.grad(y, (x, w, b), dy, retain_graph=True)
        ys[name] = (y.detach(), grads)
        if timed is not None and name not in timed:
            continue
        out[name] = {}
        if eager:
            bwd = lambda: torch.autograd.grad(y, (x, w, b), dy, retain_graph=True)
            out[name]["fwd_ms"] = do_bench(fwd, warmup=10, rep=60, return_mode="median")
            out[name]["bwd_ms"] = do_bench(bwd, warmup=10, rep=60, return_mode="median")
            del bwd
        del y  # free the eager autograd graph: its nodes live on the default stream
        # Backward ops run on their forward's stream, so the captured body must run the
        # forward too: backward GPU time = graph(fwd + bwd) - graph(fwd).
        fwd_gpu = gpu_ms(fwd)
        out[name]["fwd_gpu_ms"] = fwd_gpu
        out[name]["bwd_gpu_ms"] = gpu_ms(lambda: torch.autograd.grad(fwd(), (x, w, b), dy)) - \
            fwd_gpu
    if "torch" not in ys:
        return out
    # Correctness on the GPU at full size: normlab vs torch (both approximate the same math).
    y_t, g_t = ys["torch"]
    y_n, g_n = ys["normlab"]
    rel = lambda a, r: ((a.float() - r.float()).norm() / r.float().norm().clamp_min(1e-30)).item()
    out["rel_err"] = {"y": rel(y_n, y_t), "dx": rel(g_n[0], g_t[0]), "dw": rel(g_n[1], g_t[1]),
                      "db": rel(g_n[2], g_t[2])}
    return out


def kernel_breakdown(shape, dtype, layout, knobs=None):
    """GPU time of each forward kernel (stats, finalize, apply) on one shape: where time goes.
    ``knobs``: a ``launch.KNOBS``-like dict (default: the shipped one)."""
    from normlab.kernels import launch
    from normlab.kernels import triton_bn as k

    x = launch.make_dense(_make(shape, dtype, layout))
    C = shape[1]
    v = launch.view_of(x)
    es = x.element_size()
    knobs = knobs or launch.KNOBS
    sms = launch._sm_count(x.device) if DEV == "cuda" else 0
    t = launch.plan_tiles(v, es, sms, knobs[launch.view_kind(v, es)])
    part = torch.empty(2, t.split, C, device=DEV)
    stats = torch.empty(4, C, device=DEV)
    y = torch.empty_like(x)
    grid = launch._grid(v, t)
    meta = dict(BLOCK_C=t.block_c, BLOCK_S=t.block_s, num_warps=t.num_warps,
                num_stages=t.num_stages)
    fns = {
        "stats": lambda: k._stats_kernel[grid](x, part, *launch._common(v, t), t.split,
                                               UNROLL=t.stats_unroll, STAGES=t.stats_stages,
                                               **meta),
        "finalize": lambda: k._finalize_kernel[launch._fin_grid(v, t)](
            x, part, stats, stats, stats, stats, stats, C, v.sc, t.split, float(v.count), 0.1,
            1e-5, 1.0, HAS_W=False, HAS_B=False, UPDATE_RUNNING=False,
            BLOCK=t.fin_block, BLOCK_P=t.fin_rows),
        "apply": lambda: k._apply_kernel[grid](x, y, stats, *launch._common(v, t), RELU=False,
                                               **meta),
    }
    nbytes = x.numel() * es
    res = {"shape": list(shape), "dtype": str(dtype), "layout": layout,
           "tiles": dataclasses.asdict(t)}
    for name, fn in fns.items():
        ms = (graph_ms if DEV == "cuda" else wall_ms)(fn)
        res[f"{name}_us"] = ms * 1e3
        passes = {"stats": 1, "apply": 2}.get(name)
        if passes:
            res[f"{name}_tbps"] = passes * nbytes / (ms * 1e-3) / 1e12
    print("  " + " ".join(f"{key}={val:.2f}" if isinstance(val, float) else f"{key}={val}"
                          for key, val in res.items() if key != "tiles") + f" {t}", flush=True)
    return res


BREAKDOWN_CASES = [((256, 64, 32, 32), "float32", "nchw"), ((256, 64, 32, 32), "float32", "nhwc"),
                   ((128, 64, 56, 56), "bfloat16", "nhwc"), ((8192, 512), "float32", "nc")]


def breakdowns(cases, knobs=None) -> list[dict]:
    """kernel_breakdown per case; a failure is recorded, not raised (the run goes on)."""
    out = []
    for shape, dt, layout in cases:
        try:
            out.append(kernel_breakdown(shape, DTYPES[dt], layout, knobs))
        except Exception as e:
            print(f"  breakdown {key(shape, dt, layout)} FAILED {type(e).__name__}: {e}")
            out.append({"shape": list(shape), "dtype": dt, "layout": layout,
                        "error": f"{type(e).__name__}: {e}"})
    return out


def make_row(r, shape, dt, layout, copy_bw):
    """One result row (dict for JSON) and its table line, from bench_case's timings."""
    nbytes = math.prod(shape) * DTYPES[dt].itemsize
    row = {"shape": list(shape), "dtype": dt, "layout": layout, "mbytes": nbytes / MB, **r}
    line = f"{'x'.join(map(str, shape)):>16} {dt:>8} {layout:>4} {nbytes / MB:6.1f} |"
    for d, passes in (("fwd", 3), ("bwd", 5)):
        t_n, t_t = r["normlab"][f"{d}_gpu_ms"], r["torch"][f"{d}_gpu_ms"]
        # backward time is a difference of two timings (fwd + bwd minus fwd): on a tiny row
        # (the dry run's) noise can make it <= 0, which is no measurement: NaN, left out of the
        # geomeans like a failed capture, never a negative speed-up
        t_n, t_t = (t if t > 0 else math.nan for t in (t_n, t_t))
        row[f"{d}_tbps"] = passes * nbytes / (t_n * 1e-3) / 1e12
        row[f"{d}_torch_tbps"] = passes * nbytes / (t_t * 1e-3) / 1e12
        row[f"{d}_pct_copy"] = 100 * row[f"{d}_tbps"] * 1e12 / copy_bw
        row[f"{d}_speedup"] = t_t / t_n
        # The v4 rows time GPU only: their eager speed-up is NaN (left out of the geomeans).
        row[f"{d}_speedup_eager"] = (r["torch"].get(f"{d}_ms", math.nan)
                                     / r["normlab"].get(f"{d}_ms", math.nan))
        line += (f" {t_t * 1e3:7.1f}us {t_n * 1e3:5.1f}us {row[f'{d}_tbps']:5.2f} "
                 f"{row[f'{d}_pct_copy']:4.0f} {row[f'{d}_speedup']:5.2f} "
                 f"{row[f'{d}_speedup_eager']:5.2f} |")
    return row, line + f" {r['rel_err']['y']:.1e}/{r['rel_err']['dx']:.1e}"


def _geomean(values):
    values = [v for v in values if not math.isnan(v)]  # a failed graph capture gives NaN
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def summarize(rows, copy_bw):
    """The issue's target numbers over the matrix (forward and backward rows both count)."""

    def pick(key, cond=lambda row: True):
        return [row[f"{d}_{key}"] for row in rows for d in ("fwd", "bwd") if cond(row)]

    def bf16_nchw(row):
        return row["dtype"] == "bfloat16" and row["layout"] == "nchw"

    big = pick("pct_copy", lambda row: row["mbytes"] >= 16)
    return {"copy_tbps": copy_bw / 1e12,
            "geomean_speedup_gpu": _geomean(pick("speedup")),
            "geomean_speedup_gpu_bf16_nchw": _geomean(pick("speedup", bf16_nchw)),
            "geomean_speedup_eager": _geomean(pick("speedup_eager")),
            "geomean_speedup_eager_bf16_nchw": _geomean(pick("speedup_eager", bf16_nchw)),
            "min_pct_copy_ge_16MB": min(big) if big else None,
            "rows_ge_16MB_at_80pct": sum(p >= 80 for p in big), "rows_ge_16MB": len(big)}


def sweep_plan(matrix, sms: int = H100_SMS, min_mb: float = SWEEP_MIN_MB,
               dtypes=SWEEP_DTYPES) -> list[dict]:
    """The sweep's entries, in the order they run: each ``V4_CHANGES`` entry (``SWEEP_ORDER``)
    on each matrix row of ``min_mb`` or more in ``dtypes`` whose launch plan on ``sms`` SMs it
    changes (a change that leaves a row's plan alone, e.g. the rows-view finalize on NCHW, would
    only re-time v3.1)."""
    from normlab.kernels import launch

    plan = []
    for change in SWEEP_ORDER:
        knobs = launch.knobs_with(change)
        for shape, dt, layout in matrix:
            if mbytes(shape, dt) < min_mb or dt not in dtypes:
                continue
            x = torch.empty(shape, dtype=DTYPES[dt], device="meta")
            if layout == "nhwc":
                x = x.to(memory_format=torch.channels_last)
            v, es = launch.view_of(x), x.element_size()
            kind = launch.view_kind(v, es)
            if launch.plan_tiles(v, es, sms, knobs[kind]) != \
                    launch.plan_tiles(v, es, sms, launch.KNOBS[kind]):
                plan.append({"change": change, "shape": shape, "dtype": dt, "layout": layout})
    return plan


class Clock:
    """Seconds since the script started, against an optional budget (--budget-s)."""

    def __init__(self, budget_s: float | None):
        self.start, self.budget_s = time.perf_counter(), budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def out_of_time(self) -> bool:
        return self.budget_s is not None and self.elapsed() > self.budget_s


def with_knobs(knobs, fn):
    """Run fn() with ``launch.KNOBS`` replaced by ``knobs``; the shipped knobs come back after."""
    from normlab.kernels import launch

    shipped = launch.KNOBS
    launch.KNOBS = knobs
    try:
        return fn()
    finally:
        launch.KNOBS = shipped


def run_matrix(matrix, do_bench, impls, copy_bw):
    """The shipped kernels (v3.1 knobs) vs torch over the matrix: rows and table lines."""
    print("times are GPU time (CUDA-graph replays, L2 flushed); TB/s and % of copy bandwidth "
          "count 3 passes forward, 5 backward; x = speed-up over torch on GPU time, "
          "(eager x) = speed-up with Python and launch overhead included")
    print(f"{'shape':>16} {'dtype':>8} {'lay':>4} {'MB':>6} | {'fwd torch':>9} {'ours':>7} "
          f"{'TB/s':>5} {'%cp':>4} {'x':>5} {'(eag)':>5} | {'bwd torch':>9} {'ours':>7} "
          f"{'TB/s':>5} {'%cp':>4} {'x':>5} {'(eag)':>5} | rel err y/dx")
    rows = []
    for shape, dt, layout in matrix:
        r = bench_case(shape, DTYPES[dt], layout, do_bench, impls)
        row, line = make_row(r, shape, dt, layout, copy_bw)
        rows.append(row)
        print(line, flush=True)
    return rows


def run_v4(matrix, rows, do_bench, impls, copy_bw, clock, on_row):
    """normlab with ``launch.V4_KNOBS`` over the matrix (GPU time; torch's times are the main
    table's), side by side with v3.1. A row that fails (e.g. a config that does not compile)
    is recorded with its error; the budget skips the rest."""
    from normlab.kernels import launch

    base = {key(r["shape"], r["dtype"], r["layout"]): r for r in rows}
    print(f"v4 candidate knobs: { {k: dataclasses.asdict(v) for k, v in launch.V4_KNOBS.items()} }")
    print(f"{'shape':>16} {'dtype':>8} {'lay':>4} | {'fwd v3.1':>8} {'v4':>7} {'TB/s':>5} "
          f"{'%cp':>4} {'x':>5} {'chg':>5} | {'bwd v3.1':>8} {'v4':>7} {'TB/s':>5} {'%cp':>4} "
          f"{'x':>5} {'chg':>5} | rel err y/dx")
    v4_rows, skipped = [], []
    for shape, dt, layout in matrix:
        k = key(shape, dt, layout)
        if clock.out_of_time():
            skipped.append(k)
            continue
        try:
            r = with_knobs(launch.V4_KNOBS, lambda: bench_case(
                shape, DTYPES[dt], layout, do_bench, impls, eager=False, timed={"normlab"}))
        except Exception as e:  # one bad config must not cost the rest of the run
            print(f"{k:>30}: FAILED {type(e).__name__}: {str(e)[:200]}", flush=True)
            v4_rows.append({"shape": list(shape), "dtype": dt, "layout": layout,
                            "error": f"{type(e).__name__}: {e}"})
            on_row(v4_rows, skipped)
            continue
        r["torch"] = base[k]["torch"]
        row, _ = make_row(r, shape, dt, layout, copy_bw)
        v4_rows.append(row)
        line = f"{'x'.join(map(str, shape)):>16} {dt:>8} {layout:>4} |"
        for d in ("fwd", "bwd"):
            t_old, t_new = base[k]["normlab"][f"{d}_gpu_ms"], r["normlab"][f"{d}_gpu_ms"]
            line += (f" {t_old * 1e3:6.1f}us {t_new * 1e3:5.1f}us {row[f'{d}_tbps']:5.2f} "
                     f"{row[f'{d}_pct_copy']:4.0f} {row[f'{d}_speedup']:5.2f} "
                     f"{100 * (t_old / t_new - 1):+4.0f}% |")
        print(line + f" {r['rel_err']['y']:.1e}/{r['rel_err']['dx']:.1e}", flush=True)
        on_row(v4_rows, skipped)
    return v4_rows, skipped


def run_sweep(plan, rows, do_bench, batch_norm, clock, on_entry):
    """Each sweep_plan entry: normlab's fwd/bwd TB/s with that one change, next to v3.1's."""
    from normlab.kernels import launch

    base = {key(r["shape"], r["dtype"], r["layout"]): r for r in rows}
    print(f"sweep: {len(plan)} entries, each v4 change alone (launch.V4_CHANGES); TB/s from GPU "
          f"time, v3.1 = the main table's")
    entries, skipped = [], []
    for p in plan:
        k = key(p["shape"], p["dtype"], p["layout"])
        if clock.out_of_time():
            skipped.append(f"{p['change']}: {k}")
            continue
        nbytes = mbytes(p["shape"], p["dtype"]) * MB
        entry = {**p, "shape": list(p["shape"])}
        try:
            r = with_knobs(launch.knobs_with(p["change"]), lambda: bench_case(
                p["shape"], DTYPES[p["dtype"]], p["layout"], do_bench,
                {"normlab": batch_norm}, eager=False))
            for d, passes in (("fwd", 3), ("bwd", 5)):
                entry[f"{d}_tbps"] = passes * nbytes / (r["normlab"][f"{d}_gpu_ms"] * 1e-3) / 1e12
                entry[f"{d}_tbps_v31"] = base[k][f"{d}_tbps"] if k in base else math.nan
            print(f"  {p['change']:>8} {k:>30}: fwd {entry['fwd_tbps_v31']:.2f} -> "
                  f"{entry['fwd_tbps']:.2f}  bwd {entry['bwd_tbps_v31']:.2f} -> "
                  f"{entry['bwd_tbps']:.2f} TB/s  (t={clock.elapsed():.0f}s)", flush=True)
        except Exception as e:  # e.g. a pipelined config out of shared memory
            entry["error"] = f"{type(e).__name__}: {e}"
            print(f"  {p['change']:>8} {k:>30}: FAILED {entry['error'][:200]}", flush=True)
        entries.append(entry)
        on_entry(entries, skipped)
    return entries, skipped


def _compile_offline(fn, ptrs: dict, ints: dict, consts: dict, num_warps: int) -> dict:
    """Compile one kernel for an H100 (sm_90) without a GPU: registers and spill bytes per
    thread (cuobjdump on the cubin), shared memory per program. Integer arguments are
    specialized as a launch does (== 1: a constant; multiple of 16: divisible)."""
    import os
    import re
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig, constexprs, attrs = {}, dict(consts), {}
    for name in fn.arg_names:
        index = (fn.arg_names.index(name),)
        if name in ptrs:
            sig[name], attrs[index] = "*" + ptrs[name], [["tt.divisibility", 16]]
        elif name in ints and ints[name] == 1:
            sig[name], constexprs[name] = "constexpr", 1
        elif name in ints:
            sig[name] = "i32"
            if ints[name] % 16 == 0:
                attrs[index] = [["tt.divisibility", 16]]
        else:
            sig[name] = "constexpr"
    cc = triton.compile(ASTSource(fn, sig, constexprs, attrs), target=GPUTarget("cuda", 90, 32),
                        options={"num_warps": num_warps})
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        with open(cubin, "wb") as f:
            f.write(cc.asm["cubin"])
        tool = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
        usage = subprocess.run([tool, "--dump-resource-usage", cubin], capture_output=True,
                               text=True, check=True).stdout
    m = re.search(r"REG:(\d+) .*LOCAL:(\d+)", usage)
    return {"regs": int(m[1]), "spill_bytes": int(m[2]), "smem_bytes": cc.metadata.shared}


def resources(matrix) -> list[dict]:
    """--resources: the statistics and backward-reduce kernels of every plan the GPU run makes
    (v3.1, each V4_CHANGES entry, v4) compiled offline for sm_90; prints and returns them."""
    from normlab.kernels import launch
    from normlab.kernels import triton_bn as k

    ty = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
    out = []
    for shape, dt, layout in matrix:
        x = torch.empty(shape, dtype=DTYPES[dt], device="meta")
        if layout == "nhwc":
            x = x.to(memory_format=torch.channels_last)
        v, es = launch.view_of(x), x.element_size()
        for setting in ("v3.1", *SWEEP_ORDER, "v4"):
            knobs = launch.KNOBS if setting == "v3.1" else launch.knobs_with(setting)
            t = launch.plan_tiles(v, es, H100_SMS, knobs[launch.view_kind(v, es)])
            ints = dict(C=v.C, S=v.S, sn=v.sn, sc=v.sc, ss=v.ss, n_sblocks=t.n_sblocks,
                        n_units=t.n_units, units_per_prog=t.units_per_prog, SPLIT=t.split)
            tile = dict(BLOCK_C=t.block_c, BLOCK_S=t.block_s)
            entry = {"shape": list(shape), "dtype": dt, "layout": layout, "setting": setting}
            for name, fn, ptrs, consts in [
                ("stats", k._stats_kernel, dict(x_ptr=ty[dt], part_ptr="fp32"),
                 dict(UNROLL=t.stats_unroll, STAGES=t.stats_stages)),
                ("bwd_reduce", k._bwd_reduce_kernel,
                 dict(x_ptr=ty[dt], dy_ptr=ty[dt], stats_ptr="fp32", part_ptr="fp32"),
                 dict(RELU=False, UNROLL=t.bwd_unroll, STAGES=t.bwd_stages)),
            ]:
                entry[name] = _compile_offline(fn, ptrs, ints, {**tile, **consts}, t.num_warps)
            out.append(entry)
            print(f"{key(shape, dt, layout):>30} {setting:>8} tile {t.block_c}x{t.block_s} "
                  + "  ".join(f"{n}: {entry[n]['regs']} regs, {entry[n]['spill_bytes']} B "
                              f"spilled, {entry[n]['smem_bytes'] // 1024} KB smem"
                              for n in ("stats", "bwd_reduce")), flush=True)
    return out


def provenance() -> dict:
    import triton

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except Exception:
        commit = "unknown"
    device = torch.cuda.get_device_name() if DEV == "cuda" else "cpu (dry run, interpreter)"
    return {"device": device, "torch": torch.__version__, "triton": triton.__version__,
            "python": platform.python_version(), "commit": commit,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


DRY_MATRIX = [((4, 6, 5, 7), "bfloat16", "nchw"), ((4, 6, 5, 7), "bfloat16", "nhwc"),
              ((33, 12), "float32", "nc")]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bn_kernels.json", help="JSON results path")
    parser.add_argument("--quick", action="store_true", help="float32 and bfloat16 only")
    parser.add_argument("--v4", action="store_true",
                        help="also time normlab over the matrix with launch.V4_KNOBS")
    parser.add_argument("--sweep", action="store_true",
                        help="also time each launch.V4_CHANGES entry alone on the >= 16 MB rows")
    parser.add_argument("--budget-s", type=float, default=None, metavar="SECONDS",
                        help="skip the remaining v4 rows and sweep entries once this many "
                             "seconds have passed (they are listed as skipped in the JSON)")
    parser.add_argument("--dry-run", action="store_true",
                        help="smoke-test this script on CPU (TRITON_INTERPRET=1, tiny shapes)")
    parser.add_argument("--resources", action="store_true",
                        help="no GPU needed: compile the reduction kernels of every plan for "
                             "sm_90 and report registers, spills and shared memory")
    args = parser.parse_args(argv)
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error(f"--budget-s expects a positive number of seconds, got {args.budget_s}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    clock = Clock(args.budget_s)
    global DEV
    if args.resources:
        import os

        if os.environ.get("TRITON_INTERPRET", "0") == "1":
            print("--resources compiles kernels, which the interpreter cannot: unset "
                  "TRITON_INTERPRET", file=sys.stderr)
            return 2
        DEV = "cpu"
        result = {"provenance": provenance(), "target": "sm_90 (offline compile)",
                  "resources": resources(list(cases(args.quick)))}
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.out} ({clock.elapsed():.0f} s)")
        return 0
    if args.dry_run:
        import os

        # Before triton is imported (by normlab.kernels' launchers): the CPU interpreter.
        os.environ["TRITON_INTERPRET"] = "1"
        DEV = "cpu"
    elif not torch.cuda.is_available():
        print("bn_kernels.py needs a CUDA GPU (run it through the device tool), or --dry-run "
              "for a CPU smoke test; no GPU found.", file=sys.stderr)
        return 2
    from normlab.kernels import batch_norm

    if args.dry_run:
        def do_bench(fn, **_):
            return wall_ms(fn)

        matrix, copy_bw, sms, min_mb = DRY_MATRIX, 1e12, 0, 0.0
    else:
        from triton.testing import do_bench

        matrix, sms, min_mb = list(cases(args.quick)), H100_SMS, SWEEP_MIN_MB
        copy_bw = copy_bandwidth(do_bench)
        print(f"device {torch.cuda.get_device_name()}  copy bandwidth {copy_bw / 1e12:.2f} TB/s")
    impls = {"torch": F.batch_norm, "normlab": batch_norm}
    result = {"provenance": provenance(), "summary": {}, "rows": [], "timing_s": {}}

    def write(phase=None):
        if phase:
            result["timing_s"][phase] = round(clock.elapsed(), 1)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)

    result["rows"] = rows = run_matrix(matrix, do_bench, impls, copy_bw)
    result["summary"] = summarize(rows, copy_bw)
    print(json.dumps(result["summary"]))
    write("matrix")  # before the rest, so a time-out there keeps the main table
    breakdown_cases = BREAKDOWN_CASES if DEV == "cuda" else matrix
    print("forward kernels one by one (GPU time), v3.1:")
    result["summary"]["kernel_breakdown"] = breakdowns(breakdown_cases)
    write("breakdown")
    if args.v4:
        from normlab.kernels import launch

        def on_v4_row(v4_rows, skipped):
            result["v4"] = {"knobs": {k: dataclasses.asdict(v) for k, v in
                                      launch.V4_KNOBS.items()},
                            "rows": v4_rows, "skipped": skipped}
            write()

        v4_rows, skipped = run_v4(matrix, rows, do_bench, impls, copy_bw, clock, on_v4_row)
        on_v4_row(v4_rows, skipped)
        result["v4"]["summary"] = summarize([r for r in v4_rows if "error" not in r], copy_bw)
        print("v4 summary:", json.dumps(result["v4"]["summary"]))
        if not clock.out_of_time():
            print("forward kernels one by one (GPU time), v4:")
            result["v4"]["kernel_breakdown"] = breakdowns(breakdown_cases, launch.V4_KNOBS)
        write("v4")
    if args.sweep:
        plan = sweep_plan(matrix, sms=sms, min_mb=min_mb)

        def on_entry(entries, skipped):
            result["sweep"] = {"entries": entries, "skipped": skipped}
            write()

        on_entry(*run_sweep(plan, rows, do_bench, batch_norm, clock, on_entry))
        write("sweep")
    if args.dry_run:
        bad = [r for r in result.get("v4", {}).get("rows", []) if "error" in r] + \
            [e for e in result.get("sweep", {}).get("entries", []) if "error" in e] + \
            [b for b in result["summary"]["kernel_breakdown"] +
             result.get("v4", {}).get("kernel_breakdown", []) if "error" in b]
        errs = [max(r["rel_err"].values()) for r in rows + result.get("v4", {}).get("rows", [])
                if "rel_err" in r]
        if bad or max(errs) > 2e-2:
            print(f"dry run FAILED: errors {bad}, worst relative error {max(errs):.1e}")
            return 1
        print("dry run ok")
    print(f"wrote {args.out} ({clock.elapsed():.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
