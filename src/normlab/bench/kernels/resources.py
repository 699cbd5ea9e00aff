"""Resources: registers, spills and shared memory of every plan the GPU run makes, without a GPU.

The statistics and backward-reduce kernels (the two reductions, where the knobs act) of each
matrix row under the adopted knobs, each `V4_CHANGES` entry and `V4_KNOBS` are compiled for an
H100 (sm_90) with the Triton wheel's own ptxas; cuobjdump reads the registers and spill bytes
per thread from the binary. A plan that spills or exceeds shared memory shows up here before a
GPU run spends device time on it. Needs Triton compiling, so not under TRITON_INTERPRET=1.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from normlab.bench.kernels.matrix import Case, key, plan, view_and_size
from normlab.bench.kernels.tuning import SWEEP_ORDER, knobs_with
from normlab.kernels import launch
from normlab.kernels import triton_bn as k

TRITON_TYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
SETTINGS = ("adopted", *SWEEP_ORDER, "v4")  # launch.KNOBS, each change alone, the candidate set


def compile_offline(fn, ptrs: dict, ints: dict, consts: dict, num_warps: int) -> dict:
    """Compile one kernel for sm_90 without a GPU: registers and spill bytes per thread, shared
    memory per program. Integer arguments are specialized as a launch does (== 1: a constant;
    multiple of 16: divisible)."""
    sig, constexprs, attrs = {}, dict(consts), {}
    for index, name in enumerate(fn.arg_names):
        if name in ptrs:
            sig[name], attrs[(index,)] = "*" + ptrs[name], [["tt.divisibility", 16]]
        elif name in ints and ints[name] == 1:
            sig[name], constexprs[name] = "constexpr", 1
        elif name in ints:
            sig[name] = "i32"
            if ints[name] % 16 == 0:
                attrs[(index,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "constexpr"
    cc = triton.compile(
        ASTSource(fn, sig, constexprs, attrs), target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps}
    )
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        with open(cubin, "wb") as f:
            f.write(cc.asm["cubin"])
        tool = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
        usage = subprocess.run(
            [tool, "--dump-resource-usage", cubin], capture_output=True, text=True, check=True
        ).stdout
    m = re.search(r"REG:(\d+) .*LOCAL:(\d+)", usage)
    return {"regs": int(m[1]), "spill_bytes": int(m[2]), "smem_bytes": cc.metadata.shared}


def resources(matrix: list[Case]) -> list[dict]:
    """One entry per row and setting (`SETTINGS`): the two reduction kernels' resources."""
    out = []
    for case in matrix:
        shape, dt, layout = case
        v, _ = view_and_size(*case)
        for setting in SETTINGS:
            t = plan(case, launch.KNOBS if setting == "adopted" else knobs_with(setting))
            ints = dict(
                C=v.C,
                S=v.S,
                sn=v.sn,
                sc=v.sc,
                ss=v.ss,
                n_sblocks=t.n_sblocks,
                n_units=t.n_units,
                units_per_prog=t.units_per_prog,
                SPLIT=t.split,
            )
            tile = dict(BLOCK_C=t.block_c, BLOCK_S=t.block_s)
            ty = TRITON_TYPES[dt]
            entry = {"shape": list(shape), "dtype": dt, "layout": layout, "setting": setting}
            for name, fn, ptrs, consts in [
                (
                    "stats",
                    k._stats_kernel,
                    dict(x_ptr=ty, part_ptr="fp32"),
                    dict(UNROLL=t.stats_unroll, STAGES=t.stats_stages),
                ),
                (
                    "bwd_reduce",
                    k._bwd_reduce_kernel,
                    dict(x_ptr=ty, dy_ptr=ty, stats_ptr="fp32", part_ptr="fp32"),
                    dict(RELU=False, UNROLL=t.bwd_unroll, STAGES=t.bwd_stages),
                ),
            ]:
                entry[name] = compile_offline(fn, ptrs, ints, {**tile, **consts}, t.num_warps)
            out.append(entry)
            print(
                f"{key(*case):>30} {setting:>8} tile {t.block_c}x{t.block_s} "
                + "  ".join(
                    f"{n}: {entry[n]['regs']} regs, {entry[n]['spill_bytes']} B "
                    f"spilled, {entry[n]['smem_bytes'] // 1024} KB smem"
                    for n in ("stats", "bwd_reduce")
                ),
                flush=True,
            )
    return out


__all__ = ["SETTINGS", "compile_offline", "resources"]
