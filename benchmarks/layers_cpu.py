"""BatchNorm forward+backward on CPU: normlab's reference (PyTorch ops) vs torch's native kernel.

For each shape, times one training step of the layer (forward in training mode with the running
statistics updated, then backward for dx, dgamma, dbeta) for `backend="reference"` and
`backend="torch"`, interleaved, and reports the median over repeats (ms), the ratio
reference / torch of medians and of minimums (target: <= 1.5). Also checks that the two
outputs agree, so a fast wrong result cannot pass.
Prints a table and writes JSON with the machine, versions and thread count.

    PYTHONPATH=src python benchmarks/layers_cpu.py [--out bench-out/layers_cpu.json]
        [--threads N] [--repeats 20] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time

import torch

from normlab.layers import BatchNorm

SHAPES = [
    (256, 1024),  # MLP features (N, C)
    (64, 128, 256),  # 1-D sequence (N, C, L)
    (32, 64, 32, 32),  # CIFAR-size conv activations (N, C, H, W)
    (16, 256, 8, 8),  # late conv stage: many channels, small maps
    (128, 32, 16, 16),  # small CNN on a large batch
]
QUICK_SHAPES = [(64, 256), (8, 32, 16, 16)]


def step_times_ms(
    layers: dict[str, torch.nn.Module], x: torch.Tensor, dy: torch.Tensor, repeats: int
) -> dict[str, list[float]]:
    """Wall times (ms) of forward + backward per layer, interleaved so that load from other
    processes hits every backend alike; 3 warm-up rounds (allocator, thread pool) dropped."""
    times: dict[str, list[float]] = {name: [] for name in layers}
    for i in range(repeats + 3):
        for name, layer in layers.items():
            x.grad = None
            start = time.perf_counter()
            layer(x).backward(dy)
            elapsed = (time.perf_counter() - start) * 1e3
            if i >= 3:
                times[name].append(elapsed)
    return times


def check_agree(shape: tuple[int, ...]) -> float:
    """Max |difference| of outputs and input gradients, reference vs torch (float32)."""
    x = torch.randn(shape, requires_grad=True)
    dy = torch.randn(shape)
    results = []
    for backend in ("reference", "torch"):
        x.grad = None
        y = BatchNorm(shape[1], backend=backend)(x)
        y.backward(dy)
        results.append((y.detach(), x.grad.clone()))
    (y1, g1), (y2, g2) = results
    return max((y1 - y2).abs().max().item(), (g1 - g2).abs().max().item())


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-out/layers_cpu.json", help="JSON result path")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per case")
    parser.add_argument("--quick", action="store_true", help="two small shapes (smoke test)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    print(
        f"{'shape':>20} {'MB':>6} {'reference ms':>13} {'torch ms':>9} {'ratio':>6} "
        f"{'min ratio':>8} {'max diff':>9}"
    )
    for shape in QUICK_SHAPES if args.quick else SHAPES:
        x = torch.randn(shape, requires_grad=True)
        dy = torch.randn(shape)
        layers = {b: BatchNorm(shape[1], backend=b) for b in ("reference", "torch")}
        times = step_times_ms(layers, x, dy, args.repeats)
        diff = check_agree(shape)
        ref, tor = statistics.median(times["reference"]), statistics.median(times["torch"])
        row = {
            "shape": list(shape),
            "mb": x.numel() * 4 / 1e6,
            "reference_ms": ref,
            "torch_ms": tor,
            "ratio": ref / tor,
            "reference_min_ms": min(times["reference"]),
            "torch_min_ms": min(times["torch"]),
            "ratio_of_min": min(times["reference"]) / min(times["torch"]),
            "max_abs_diff": diff,
        }
        rows.append(row)
        print(
            f"{str(shape):>20} {row['mb']:6.1f} {ref:13.3f} {tor:9.3f} {row['ratio']:6.2f} "
            f"{row['ratio_of_min']:8.2f} {diff:9.1e}"
        )
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
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_avg_1min": os.getloadavg()[0],
        },
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "commit": commit(),
        "repeats": args.repeats,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
