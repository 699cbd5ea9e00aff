"""BatchNorm forward+backward on CPU: normlab's reference (PyTorch ops) vs torch's native kernel.

For each shape, times one training step of the layer (forward in training mode with the running
statistics updated, then backward for dx, dgamma, dbeta) for `impl="reference"` and
`impl="torch"`, interleaved, and reports the median over repeats (ms), the ratio
reference / torch of medians and of minimums (target: <= 1.5). Also checks that the two
outputs agree, so a fast wrong result cannot pass.
Prints a table and writes JSON with the machine, versions and thread count.

    PYTHONPATH=src python benchmarks/layers_cpu.py [--out bench-out/layers_cpu.json]
        [--threads N] [--repeats 20] [--quick]
    normlab bench layers --threads 1 --quick
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any

import torch

from normlab.bench.common import (
    Column,
    check_out,
    check_threads,
    git_commit,
    header_line,
    provenance,
    row_line,
    torch_threads,
    write_json,
)
from normlab.experiments.errors import ConfigError, UserError
from normlab.layers import BatchNorm

SHAPES = [
    (256, 1024),  # MLP features (N, C)
    (64, 128, 256),  # 1-D sequence (N, C, L)
    (32, 64, 32, 32),  # CIFAR-size conv activations (N, C, H, W)
    (16, 256, 8, 8),  # late conv stage: many channels, small maps
    (128, 32, 16, 16),  # small CNN on a large batch
]
QUICK_SHAPES = [(64, 256), (8, 32, 16, 16)]
IMPLS = ("reference", "torch")
WARMUP = 3  # untimed rounds: allocator, thread pool
COLUMNS = [
    Column("shape", "shape", 20, fmt=""),
    Column("MB", "mb", 6, fmt=".1f"),
    Column("reference ms", "reference_ms", 13),
    Column("torch ms", "torch_ms", 9),
    Column("ratio", "ratio", 6, fmt=".2f"),
    Column("min ratio", "ratio_of_min", 9, fmt=".2f"),
    Column("max diff", "max_abs_diff", 9, fmt=".1e"),
]


def step_times_ms(
    layers: dict[str, torch.nn.Module], x: torch.Tensor, dy: torch.Tensor, repeats: int
) -> dict[str, list[float]]:
    """Wall times (ms) of forward + backward per layer, interleaved so that load from other
    processes hits every implementation alike; WARMUP rounds dropped."""
    times: dict[str, list[float]] = {name: [] for name in layers}
    for i in range(repeats + WARMUP):
        for name, layer in layers.items():
            x.grad = None
            start = time.perf_counter()
            layer(x).backward(dy)
            elapsed = (time.perf_counter() - start) * 1e3
            if i >= WARMUP:
                times[name].append(elapsed)
    return times


def check_agree(shape: tuple[int, ...]) -> float:
    """Max |difference| of outputs and input gradients, reference vs torch (float32)."""
    x = torch.randn(shape, requires_grad=True)
    dy = torch.randn(shape)
    results = []
    for impl in IMPLS:
        x.grad = None
        y = BatchNorm(shape[1], impl=impl)(x)
        y.backward(dy)
        results.append((y.detach(), x.grad.clone()))
    (y1, g1), (y2, g2) = results
    return max((y1 - y2).abs().max().item(), (g1 - g2).abs().max().item())


def time_shape(shape: tuple[int, ...], repeats: int) -> dict[str, Any]:
    """One table row: median / minimum ms per implementation, their ratios and the max difference."""
    x = torch.randn(shape, requires_grad=True)
    dy = torch.randn(shape)
    layers = {b: BatchNorm(shape[1], impl=b) for b in IMPLS}
    times = step_times_ms(layers, x, dy, repeats)
    ref, tor = statistics.median(times["reference"]), statistics.median(times["torch"])
    return {
        "shape": list(shape),
        "mb": x.numel() * 4 / 1e6,
        "reference_ms": ref,
        "torch_ms": tor,
        "ratio": ref / tor,
        "reference_min_ms": min(times["reference"]),
        "torch_min_ms": min(times["torch"]),
        "ratio_of_min": min(times["reference"]) / min(times["torch"]),
        "max_abs_diff": check_agree(shape),
    }


def bench_layers_cpu(
    *, threads: int | None = None, repeats: int = 20, quick: bool = False, out: str = "bench-out/layers_cpu.json"
) -> dict[str, Any]:
    """Time BN training steps, reference vs torch, print the table, write and return the JSON.

    Args:
        threads: torch intra-op threads during the benchmark (None: unchanged); restored after.
        repeats: timed steps per shape and implementation (the median is reported).
        quick: two small shapes instead of five (a smoke test).
        out: the JSON file.

    Returns:
        The JSON written: `benchmark, what, rows, geomean_ratio, geomean_ratio_of_min, machine,
        versions, commit, repeats, quick, provenance`; each row has `shape, mb, reference_ms,
        torch_ms, ratio (= reference_ms / torch_ms), reference_min_ms, torch_min_ms,
        ratio_of_min, max_abs_diff`.

    Example:
        >>> result = bench_layers_cpu(threads=1, repeats=2, quick=True, out="layers.json")
        >>> result["rows"][0]["max_abs_diff"] < 1e-4
        True
    """
    if repeats < 1:
        raise ConfigError(f"--repeats: expected >= 1 timed step per shape, got {repeats}")
    check_threads(threads)
    out_path = check_out(out)
    with torch_threads(threads):
        torch.manual_seed(0)
        rows = []
        print(header_line(COLUMNS))
        for shape in QUICK_SHAPES if quick else SHAPES:
            row = time_shape(shape, repeats)
            rows.append(row)
            print(row_line(COLUMNS, {**row, "shape": str(shape)}))  # printed as it is measured
        where = provenance(torch.device("cpu"))  # inside torch_threads: records the count used
    geomean = statistics.geometric_mean([r["ratio"] for r in rows])
    geomean_min = statistics.geometric_mean([r["ratio_of_min"] for r in rows])
    print(
        f"geomean ratio reference / torch: {geomean:.2f} of medians, {geomean_min:.2f} of "
        f"minimums (target <= 1.5; medians are noisy on a loaded machine)"
    )
    result = {
        "benchmark": "layers_cpu",
        "what": "BatchNorm training step (forward + backward), float32, median ms",
        "rows": rows,
        "geomean_ratio": geomean,
        "geomean_ratio_of_min": geomean_min,
        "machine": {  # kept for readers of earlier results; `provenance` has the same and more
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": where["torch_threads"],
            "load_avg_1min": where["load_avg_1min"],
        },
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "commit": git_commit(short=True),
        "repeats": repeats,
        "quick": quick,
        "provenance": where,
    }
    write_json(result, out_path)
    return result


def main(argv: list[str] | None = None) -> int:
    """The script's command line (`benchmarks/layers_cpu.py`); returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-out/layers_cpu.json", help="JSON result path")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per case")
    parser.add_argument("--quick", action="store_true", help="two small shapes (smoke test)")
    args = parser.parse_args(argv)
    try:
        bench_layers_cpu(threads=args.threads, repeats=args.repeats, quick=args.quick, out=args.out)
    except UserError as exc:
        parser.error(str(exc))  # usage + the message on stderr, exit code 2
    return 0


__all__ = ["bench_layers_cpu", "check_agree", "main", "step_times_ms", "time_shape"]
