"""The seed notebook's training loop vs normlab's engine, on the seed's workload.

Workload: the seed's MLP (flatten, Linear 512, norm, ReLU, Linear 256, norm, ReLU,
Linear 10) with and without BN, one epoch over `--samples` CIFAR-shaped synthetic uint8 images
(default 50,000), batch size 64, Adam lr 1e-3.

- seed-style: a `torch.utils.data.DataLoader` over a Dataset that converts and normalizes each
  sample (ToTensor + Normalize(0.5, 0.5) per image), batches copied to the device, the loss
  read back with `.item()` every step.
- engine: `normlab.train.fit` (device-resident BatchLoader, one host sync per 10 steps);
  its `epoch_seconds` metric (training steps only) and the whole `fit` call (set-up and the
  end-of-epoch evaluation included) are both reported. `--cuda-graph` sets the engine's
  `cuda_graph=True` (each step replayed as one CUDA graph; GPU only).

Both run in one process, alternately, `--repeats` times; the table shows the median seconds
per epoch and the ratio seed-style / engine (> 1: the engine is faster). Target: >= 20x on a
GPU, >= 1x on CPU.

    PYTHONPATH=src python benchmarks/training_loop.py --device cpu --samples 5000 --threads 1
    python benchmarks/training_loop.py --device cuda --out training_loop.json
    normlab bench loop --device cuda --cuda-graph --out training_loop_graph.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from normlab.bench.common import (
    Column,
    check_out,
    check_threads,
    print_table,
    provenance,
    resolve_device,
    torch_threads,
    write_json,
)
from normlab.data import load_dataset
from normlab.experiments.errors import ConfigError, UserError
from normlab.layers import norm_names
from normlab.models import build_model
from normlab.train import fit
from normlab.train.config import RunConfig

BATCH_SIZE = 64  # the seed notebook's batch
PRECISIONS = ("fp32", "bf16")
COLUMNS = [
    Column("model", "model", 16, fmt="", align="<"),
    Column("seed-style s", "seed_style_s", 13),
    Column("engine s", "engine_epoch_s", 10),
    Column("fit s", "engine_fit_s", 8),
    Column("ratio", "speedup", 7, fmt=".1f", suffix="x"),
    Column("ratio fit", "speedup_whole_fit", 10, fmt=".1f", suffix="x"),
]


class PerSampleImages(torch.utils.data.Dataset):
    """The seed's dataset: each __getitem__ converts one uint8 image to a normalized float."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y  # (N, 3, 32, 32) uint8, (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.x[i].float().div(255.0)  # ToTensor: (3, 32, 32) in [0, 1]
        return (img - 0.5) / 0.5, int(self.y[i])  # Normalize((0.5,) * 3, (0.5,) * 3)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seed_style_epoch(data: Any, norm: str, device: torch.device, workers: int) -> float:
    """Seconds for one epoch of the seed notebook's loop."""
    torch.manual_seed(0)
    model = build_model("mlp", (3, 32, 32), 10, norm=norm).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        PerSampleImages(data.train_x, data.train_y), batch_size=BATCH_SIZE, shuffle=True, num_workers=workers
    )
    sync(device)
    start = time.perf_counter()
    running = 0.0
    model.train()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        running += loss.item()  # the seed's per-step host sync, part of what is measured
    sync(device)
    return time.perf_counter() - start


def engine_epoch(
    data: Any,
    norm: str,
    device: torch.device,
    compile_model: bool = False,
    precision: str = "fp32",
    cuda_graph: bool = False,
) -> tuple[float, float]:
    """(epoch_seconds, whole fit seconds) of normlab's engine on the same workload."""
    config = RunConfig(
        dataset=data.name,
        model="mlp",
        norm=norm,
        batch_size=BATCH_SIZE,
        epochs=1,
        lr=1e-3,
        optimizer="adam",
        holdout_fraction=0.0,
        device=str(device),
        checkpoint_every_epochs=0,
        probes={"step_time": False},
        compile=compile_model,
        precision=precision,
        cuda_graph=cuda_graph,
    )
    values: dict[str, float] = {}
    start = time.perf_counter()
    fit(config, dataset=data, on_metrics=lambda s, e, v: values.update(v))
    sync(device)
    return values["epoch_seconds"], time.perf_counter() - start


def check_options(
    device: str,
    samples: int,
    repeats: int,
    workers: int,
    norms: Sequence[str],
    compile_model: bool,
    precision: str,
    cuda_graph: bool,
    threads: int | None,
) -> torch.device:
    """Every option checked before anything is timed; returns the device. Raises ConfigError."""
    if samples < BATCH_SIZE:
        raise ConfigError(f"--samples: expected >= {BATCH_SIZE} (one batch), got {samples}")
    if repeats < 1:
        raise ConfigError(f"--repeats: expected >= 1 timed repetition, got {repeats}")
    if workers < 0:
        raise ConfigError(f"--workers: expected >= 0 DataLoader workers, got {workers}")
    if not norms:
        raise ConfigError("--norms: expected at least one norm, e.g. batch,none; got none")
    unknown = [n for n in norms if n not in norm_names()]
    if unknown:
        raise ConfigError(f"--norms: unknown norm {unknown[0]!r}; valid: {', '.join(norm_names())}")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    check_threads(threads)
    resolved = resolve_device(device)
    gpu_only = [
        flag
        for flag, on in (
            ("--compile", compile_model),
            ("--precision bf16", precision == "bf16"),
            ("--cuda-graph", cuda_graph),
        )
        if on
    ]
    if gpu_only and resolved.type != "cuda":
        raise ConfigError(
            f"{gpu_only[0]} is a GPU option of the engine, but the device is "
            f"{resolved}; drop it or use --device cuda on a machine with a GPU"
        )
    return resolved


def bench_training_loop(
    *,
    device: str = "auto",
    samples: int = 50_000,
    repeats: int = 3,
    workers: int = 0,
    norms: Sequence[str] = ("batch", "none"),
    compile_model: bool = False,
    precision: str = "fp32",
    cuda_graph: bool = False,
    threads: int | None = None,
    out: str = "training_loop.json",
) -> dict[str, Any]:
    """Time the seed-style loop against the engine, print the table, write and return the JSON.

    Args:
        device: 'auto', 'cpu', 'cuda' or 'cuda:N'.
        samples: training images per epoch (>= 64; 50,000 = CIFAR-10's train split).
        repeats: alternating timed repetitions per norm (the median is reported).
        workers: DataLoader worker processes of the seed-style loop.
        norms: the MLP's norm per row, names from `normlab.layers.norm_names()`.
        compile_model, precision, cuda_graph: the engine's torch.compile, autocast and CUDA-graph
            options (GPU only).
        threads: torch intra-op threads during the benchmark (None: unchanged); restored after.
        out: the JSON file.

    Returns:
        The JSON written: `benchmark, samples, batch_size, repeats, workers, compile, precision,
        cuda_graph, device, rows, provenance`; each row has `model, seed_style_s, engine_epoch_s,
        engine_fit_s, speedup (= seed_style_s / engine_epoch_s), speedup_whole_fit,
        seed_style_all_s, engine_epoch_all_s`.

    Example:
        >>> result = bench_training_loop(device="cpu", samples=128, repeats=1, threads=1)
        >>> result["rows"][0]["speedup"] > 0
        True
    """
    norms = list(norms)
    resolved = check_options(device, samples, repeats, workers, norms, compile_model, precision, cuda_graph, threads)
    out_path = check_out(out)
    with torch_threads(threads):
        data = load_dataset(
            "synthetic", shape=(3, 32, 32), num_classes=10, train_size=samples, test_size=1000, uint8=True
        )
        engine = dict(compile_model=compile_model, precision=precision, cuda_graph=cuda_graph)
        rows = []
        for norm in norms:
            engine_epoch(data, norm, resolved, **engine)  # warm-up: first-call allocations, lazy imports
            seed_t, engine_t, fit_t = [], [], []
            for _ in range(repeats):
                seed_t.append(seed_style_epoch(data, norm, resolved, workers))
                e, f = engine_epoch(data, norm, resolved, **engine)
                engine_t.append(e)
                fit_t.append(f)
            seed_s, engine_s, fit_s = (statistics.median(t) for t in (seed_t, engine_t, fit_t))
            rows.append(
                {
                    "model": f"mlp norm={norm}",
                    "seed_style_s": seed_s,
                    "engine_epoch_s": engine_s,
                    "engine_fit_s": fit_s,
                    "speedup": seed_s / engine_s,
                    "speedup_whole_fit": seed_s / fit_s,
                    "seed_style_all_s": seed_t,
                    "engine_epoch_all_s": engine_t,
                }
            )
        where = provenance(resolved)  # inside torch_threads: records the count used

    print(f"one epoch, {samples} images 3x32x32, batch {BATCH_SIZE}, Adam 1e-3, device {resolved}, median of {repeats}")
    print_table(COLUMNS, rows)
    result = {
        "benchmark": "training_loop",
        "samples": samples,
        "batch_size": BATCH_SIZE,
        "repeats": repeats,
        "workers": workers,
        "compile": compile_model,
        "precision": precision,
        "cuda_graph": cuda_graph,
        "device": str(resolved),
        "rows": rows,
        "provenance": where,
    }
    write_json(result, out_path)
    return result


def main(argv: list[str] | None = None) -> int:
    """The script's command line (`benchmarks/training_loop.py`); returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--samples", type=int, default=50_000, help="training images (50,000 = CIFAR)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (seed-style)")
    parser.add_argument("--norms", default="batch,none", help="comma-separated norms")
    parser.add_argument("--compile", action="store_true", help="engine: torch.compile (GPU)")
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS), help="engine: bf16 autocast (GPU)")
    parser.add_argument("--cuda-graph", action="store_true", help="engine: replay each step as a CUDA graph (GPU)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default torch's; 1 on a shared CPU)"
    )
    parser.add_argument("--out", default="training_loop.json", help="JSON output path")
    args = parser.parse_args(argv)
    try:
        bench_training_loop(
            device=args.device,
            samples=args.samples,
            repeats=args.repeats,
            workers=args.workers,
            norms=split_norms(args.norms),
            compile_model=args.compile,
            precision=args.precision,
            cuda_graph=args.cuda_graph,
            threads=args.threads,
            out=args.out,
        )
    except UserError as exc:
        parser.error(str(exc))  # usage + the message on stderr, exit code 2
    return 0


def split_norms(text: str) -> list[str]:
    """'batch, none' -> ['batch', 'none'] (empty items dropped)."""
    return [n.strip() for n in text.split(",") if n.strip()]


__all__ = ["bench_training_loop", "engine_epoch", "main", "seed_style_epoch", "split_norms"]
