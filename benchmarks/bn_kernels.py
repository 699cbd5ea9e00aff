"""BatchNorm training step, torch vs normlab's Triton kernels, against the copy-bandwidth limit.

Measures the device copy bandwidth (bytes read + written), then for each shape x dtype x layout
times forward (training mode, running stats updated) and backward (dx, dweight, dbias) of
``torch.nn.functional.batch_norm`` and ``normlab.kernels.batch_norm`` with
``triton.testing.do_bench`` (median; it flushes L2 between runs). Counted bytes: forward 3 passes
over x (read for statistics, read + write to apply), backward 5 (read x, dy; read x, dy + write
dx). Prints a table and writes JSON.

    PYTHONPATH=src python benchmarks/bn_kernels.py --out bn_kernels.json [--quick] [--sweep]
"""

import argparse
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


def _make(shape, dtype, layout):
    x = torch.randn(shape, device=DEV, dtype=torch.float32).to(dtype)
    if layout == "nhwc":
        x = x.to(memory_format=torch.channels_last)
    return x


def bench_case(shape, dtype, layout, do_bench, impls, graphs=True, eager=True):
    """Times and checks one row: {impl: {fwd_ms, bwd_ms, fwd_gpu_ms, bwd_gpu_ms}} plus
    relative errors of normlab vs torch. *_ms: eager (do_bench median, Python and launches
    included); *_gpu_ms: CUDA-graph replays (kernels only)."""
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
        out[name] = {}
        if eager:
            bwd = lambda: torch.autograd.grad(y, (x, w, b), dy, retain_graph=True)
            out[name]["fwd_ms"] = do_bench(fwd, warmup=10, rep=60, return_mode="median")
            out[name]["bwd_ms"] = do_bench(bwd, warmup=10, rep=60, return_mode="median")
            del bwd
        del y  # free the eager autograd graph: its nodes live on the default stream
        if graphs:
            # Backward ops run on their forward's stream, so the captured body must run the
            # forward too: backward GPU time = graph(fwd + bwd) - graph(fwd).
            fwd_gpu = graph_ms(fwd)
            out[name]["fwd_gpu_ms"] = fwd_gpu
            out[name]["bwd_gpu_ms"] = graph_ms(
                lambda: torch.autograd.grad(fwd(), (x, w, b), dy)) - fwd_gpu
    if "torch" not in ys:
        return out
    # Correctness on the GPU at full size: normlab vs torch (both approximate the same math).
    y_t, g_t = ys["torch"]
    y_n, g_n = ys["normlab"]
    rel = lambda a, r: ((a.float() - r.float()).norm() / r.float().norm().clamp_min(1e-30)).item()
    out["rel_err"] = {"y": rel(y_n, y_t), "dx": rel(g_n[0], g_t[0]), "dw": rel(g_n[1], g_t[1]),
                      "db": rel(g_n[2], g_t[2])}
    return out


def kernel_breakdown(shape, dtype, layout):
    """GPU time of each forward kernel (stats, finalize, apply) on one shape: where time goes."""
    from normlab.kernels import launch
    from normlab.kernels import triton_bn as k

    x = launch.make_dense(_make(shape, dtype, layout))
    C = shape[1]
    v = launch.view_of(x)
    t = launch.choose_tiles(v, x.element_size(), x.device)
    y, stats = launch.forward(x, None, None, None, None, True, 0.1, 1e-5, False)
    part = torch.empty(2, t.split, C, device=DEV)
    grid = launch._grid(v, t)
    meta = dict(BLOCK_C=t.block_c, BLOCK_S=t.block_s, num_warps=t.num_warps,
                num_stages=t.num_stages)
    fns = {
        "stats": lambda: k._stats_kernel[grid](x, part, *launch._common(v, t), t.split, **meta),
        "finalize": lambda: k._finalize_kernel[(triton_cdiv(C, launch._FINALIZE_BLOCK),)](
            x, part, stats, stats, stats, stats, stats, C, v.sc, t.split, float(v.count), 0.1,
            1e-5, 1.0, HAS_W=False, HAS_B=False, UPDATE_RUNNING=False,
            BLOCK=launch._FINALIZE_BLOCK, BLOCK_P=launch._finalize_block_p(x.device)),
        "apply": lambda: k._apply_kernel[grid](x, y, stats, *launch._common(v, t), RELU=False,
                                               **meta),
    }
    nbytes = x.numel() * x.element_size()
    res = {"shape": list(shape), "dtype": str(dtype), "layout": layout, "tiles": vars(t).copy()
           if hasattr(t, "__dict__") else str(t)}
    for name, fn in fns.items():
        ms = graph_ms(fn)
        res[f"{name}_us"] = ms * 1e3
        passes = {"stats": 1, "apply": 2}.get(name)
        if passes:
            res[f"{name}_tbps"] = passes * nbytes / (ms * 1e-3) / 1e12
    print("  " + " ".join(f"{key}={val:.2f}" if isinstance(val, float) else f"{key}={val}"
                          for key, val in res.items() if key != "tiles") + f" {t}", flush=True)
    return res


def triton_cdiv(a, b):
    return (a + b - 1) // b


def make_row(r, shape, dt, layout, copy_bw):
    """One result row (dict for JSON) and its table line, from bench_case's timings."""
    nbytes = math.prod(shape) * DTYPES[dt].itemsize
    row = {"shape": list(shape), "dtype": dt, "layout": layout, "mbytes": nbytes / MB, **r}
    line = f"{'x'.join(map(str, shape)):>16} {dt:>8} {layout:>4} {nbytes / MB:6.1f} |"
    for d, passes in (("fwd", 3), ("bwd", 5)):
        t_n, t_t = r["normlab"][f"{d}_gpu_ms"], r["torch"][f"{d}_gpu_ms"]
        row[f"{d}_tbps"] = passes * nbytes / (t_n * 1e-3) / 1e12
        row[f"{d}_torch_tbps"] = passes * nbytes / (t_t * 1e-3) / 1e12
        row[f"{d}_pct_copy"] = 100 * row[f"{d}_tbps"] * 1e12 / copy_bw
        row[f"{d}_speedup"] = t_t / t_n
        row[f"{d}_speedup_eager"] = r["torch"][f"{d}_ms"] / r["normlab"][f"{d}_ms"]
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


def provenance() -> dict:
    import triton

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except Exception:
        commit = "unknown"
    return {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "triton": triton.__version__, "python": platform.python_version(), "commit": commit,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def dry_run() -> int:
    """Run bench_case on tiny CPU tensors in Triton's interpreter: catches script bugs before
    spending GPU time. Timings are meaningless."""
    import os

    global DEV
    os.environ["TRITON_INTERPRET"] = "1"
    DEV = "cpu"
    from normlab.kernels import batch_norm

    def fake_bench(fn, **_):
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3

    rows = []
    for shape, layout in (((4, 6, 5, 7), "nchw"), ((4, 6, 5, 7), "nhwc"), ((33, 12), "nc")):
        r = bench_case(shape, torch.bfloat16, layout, fake_bench,
                       {"torch": F.batch_norm, "normlab": batch_norm}, graphs=False)
        print(shape, layout, r["rel_err"])
        assert all(e < 2e-2 for e in r["rel_err"].values()), r
        for impl in ("torch", "normlab"):
            for d in ("fwd", "bwd"):
                r[impl][f"{d}_gpu_ms"] = r[impl][f"{d}_ms"]  # no graphs on CPU
        rows.append(make_row(r, shape, "bfloat16", layout, 1e12)[0])
        print(make_row(r, shape, "bfloat16", layout, 1e12)[1])
    print(json.dumps(summarize(rows, 1e12)))
    print("dry run ok")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bn_kernels.json", help="JSON results path")
    parser.add_argument("--quick", action="store_true", help="float32 and bfloat16 only")
    parser.add_argument("--sweep", action="store_true",
                        help="also time normlab with other PROGRAMS_PER_SM / TILE_ELEMS settings")
    parser.add_argument("--dry-run", action="store_true",
                        help="smoke-test this script on CPU (TRITON_INTERPRET=1, tiny shapes)")
    args = parser.parse_args()
    if args.dry_run:
        return dry_run()
    if not torch.cuda.is_available():
        print("bn_kernels.py needs a CUDA GPU (run it through the device tool); none found.",
              file=sys.stderr)
        return 2
    from triton.testing import do_bench

    from normlab.kernels import batch_norm, launch

    impls = {"torch": F.batch_norm, "normlab": batch_norm}
    copy_bw = copy_bandwidth(do_bench)
    print(f"device {torch.cuda.get_device_name()}  copy bandwidth {copy_bw / 1e12:.2f} TB/s")
    print("times are GPU time (CUDA-graph replays, L2 flushed); TB/s and % of copy bandwidth "
          "count 3 passes forward, 5 backward; x = speed-up over torch on GPU time, "
          "(eager x) = speed-up with Python and launch overhead included")
    hdr = (f"{'shape':>16} {'dtype':>8} {'lay':>4} {'MB':>6} | {'fwd torch':>9} {'ours':>7} "
           f"{'TB/s':>5} {'%cp':>4} {'x':>5} {'(eag)':>5} | {'bwd torch':>9} {'ours':>7} "
           f"{'TB/s':>5} {'%cp':>4} {'x':>5} {'(eag)':>5} | rel err y/dx")
    rows = []
    print(hdr)
    for shape, dt, layout in cases(args.quick):
        dtype = DTYPES[dt]
        nbytes = math.prod(shape) * dtype.itemsize
        r = bench_case(shape, dtype, layout, do_bench, impls)
        row, line = make_row(r, shape, dt, layout, copy_bw)
        rows.append(row)
        print(line, flush=True)
    summary = summarize(rows, copy_bw)
    print(json.dumps(summary))
    sweep = []

    def write():
        with open(args.out, "w") as f:
            json.dump({"provenance": provenance(), "summary": summary, "rows": rows,
                       "sweep": sweep}, f, indent=1)

    write()  # before the sweep, so a time-out there keeps the main table
    print("forward kernels one by one (GPU time):")
    breakdown = [kernel_breakdown(shape, DTYPES[dt], layout) for shape, dt, layout in
                 [((256, 64, 32, 32), "float32", "nchw"), ((256, 64, 32, 32), "float32", "nhwc"),
                  ((128, 64, 56, 56), "bfloat16", "nhwc"), ((8192, 512), "float32", "nc")]]
    summary["kernel_breakdown"] = breakdown
    write()
    if args.sweep:
        print("sweep (normlab GPU time, channels-last/(N, C) rows view): PROGRAMS_PER_SM, "
              "TILE_ELEMS -> fwd/bwd TB/s")
        defaults = (dict(launch.PROGRAMS_PER_SM), dict(launch.TILE_ELEMS))
        for pps in (1, 2, 4):
            for te in (4096, 8192):
                for kind in ("rows", "rows16"):
                    launch.PROGRAMS_PER_SM[kind], launch.TILE_ELEMS[kind] = pps, te
                for shape, dt, layout in [((256, 64, 32, 32), "float32", "nhwc"),
                                          ((256, 64, 32, 32), "bfloat16", "nhwc"),
                                          ((128, 64, 56, 56), "bfloat16", "nhwc"),
                                          ((64, 8, 256, 256), "bfloat16", "nhwc"),
                                          ((8192, 512), "float32", "nc")]:
                    dtype = DTYPES[dt]
                    nbytes = math.prod(shape) * dtype.itemsize
                    r = bench_case(shape, dtype, layout, do_bench, {"normlab": batch_norm},
                                   eager=False)
                    s = {"pps": pps, "tile_elems": te, "shape": list(shape), "dtype": dt,
                         "layout": layout,
                         "fwd_tbps": 3 * nbytes / (r["normlab"]["fwd_gpu_ms"] * 1e-3) / 1e12,
                         "bwd_tbps": 5 * nbytes / (r["normlab"]["bwd_gpu_ms"] * 1e-3) / 1e12}
                    sweep.append(s)
                    print(f"  pps={pps:2d} tile={te:5d} {'x'.join(map(str, shape)):>14} {dt:>8} "
                          f"{layout}: fwd {s['fwd_tbps']:.2f} bwd {s['bwd_tbps']:.2f}", flush=True)
        (launch.PROGRAMS_PER_SM, launch.TILE_ELEMS) = defaults
    write()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
