"""CPU time of study part 9 (the notebook, replayed) on a full-size CIFAR-10, without CIFAR-10.

CIFAR-10 cannot be downloaded here, so this builds a fake one of the real size in the real
binary format (random bytes: 5 training batches of 10,000 records and a test batch, each record
a label byte then 3072 pixel bytes) in a temporary folder, loads it through normlab's CIFAR-10
loader, and times the part's runs on one torch thread. Random pixels train to chance, but the
cost of a step does not depend on the pixel values.

Per variant of `normlab/study/configs/notebook.yaml` on CIFAR-10, in this process's CPU time:
the engine's build (model, optimizer, loaders), `--steps` training steps after 5 warm-up steps
(the run's own eager step), and one evaluation (the test split in eval mode, the held-out slice
in train and eval mode). A whole run is extrapolated as build + steps x (time per step) +
epochs x (one evaluation); `--whole LABEL` also trains that variant's whole run with `fit` and
prints its measured CPU time beside the extrapolation, to check it.

    PYTHONPATH=src python benchmarks/study_cifar.py [--steps 30] [--whole batch] [--out bench-out/study_cifar.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from normlab.data import cifar, load_dataset
from normlab.study import part9_notebook
from normlab.study.protocol import EVAL_SEEDS, _with
from normlab.study.registry import load_part
from normlab.train.build import build
from normlab.train.engine import evaluate, fit
from normlab.train.parallel import ProcessContext
from normlab.train.step import make_step

WARMUP_STEPS = 5


def write_fake_cifar10(root: Path, seed: int = 0) -> None:
    """Random records in CIFAR-10's binary format, of the real counts, under `root`/cifar10."""
    rng = np.random.default_rng(seed)
    spec = cifar.CIFAR10
    for path, (_, count) in zip(spec.paths(root / spec.name), spec.train_files + spec.test_files):
        path.parent.mkdir(parents=True, exist_ok=True)
        records = rng.integers(0, 256, (count, 1 + cifar.PIXELS), dtype=np.uint8)  # (count, 3073)
        records[:, 0] %= 10  # the label byte: 0..9
        path.write_bytes(records.tobytes())


def cpu() -> float:
    return time.process_time()


def time_variant(config, dataset, steps: int) -> dict:
    """CPU seconds of the build, of one training step (mean over `steps`) and of one evaluation."""
    ctx = ProcessContext()
    t = cpu()
    run = build(config, dataset, ctx)
    build_s = cpu() - t
    train_step = make_step(config, run, ctx)
    batches = iter(train_step.batches())  # one epoch: 351 steps at batch 128, enough
    for batch in itertools.islice(batches, WARMUP_STEPS):
        train_step(batch, None)
        run.scheduler.step()
    t = cpu()
    for batch in itertools.islice(batches, steps):
        train_step(batch, None)
        run.scheduler.step()
    step_s = (cpu() - t) / steps
    t = cpu()
    evaluate(run, ctx)
    eval_s = cpu() - t
    run_s = build_s + run.total_steps * step_s + config.epochs * eval_s
    return {
        "build_s": build_s,
        "step_ms": 1000 * step_s,
        "eval_s": eval_s,
        "total_steps": run.total_steps,
        "epochs": config.epochs,
        "run_s": run_s,
    }


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per variant")
    parser.add_argument("--whole", default=None, help="also train this variant's whole run (e.g. batch)")
    parser.add_argument("--out", default="bench-out/study_cifar.json", help="JSON result path")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the study's workers run

    spec = load_part(part9_notebook, "cifar10")
    rows, whole = [], None
    with tempfile.TemporaryDirectory(prefix="normlab-fake-cifar10-") as root:
        t = cpu()
        write_fake_cifar10(Path(root))
        write_s = cpu() - t
        t = cpu()
        dataset = load_dataset("cifar10", root, download=False)
        load_s = cpu() - t
        for v in spec.variants:
            config = _with(v.config, seed=0, data_root=root)
            rows.append({"variant": v.label, **time_variant(config, dataset, args.steps)})
            print(f"  timed {v.label}", flush=True)
        if args.whole:
            variant = next((v for v in spec.variants if v.label == args.whole), None)
            if variant is None:
                raise SystemExit(
                    f"--whole: expected a variant of part 9, one of {[v.label for v in spec.variants]}, "
                    f"got {args.whole!r}"
                )
            t = cpu()
            result = fit(_with(variant.config, seed=0, data_root=root), dataset=dataset)
            whole = {
                "variant": args.whole,
                "measured_s": cpu() - t,
                "steps": result.steps,
                "extrapolated_s": next(r["run_s"] for r in rows if r["variant"] == args.whole),
            }

    seeds = len(EVAL_SEEDS)
    part_s = seeds * sum(r["run_s"] for r in rows)
    print(f"\nfake full-size CIFAR-10: written in {write_s:.1f} s, loaded in {load_s:.1f} s (CPU)")
    print(f"{'variant':<26} {'steps':>6} {'ms/step':>8} {'eval s':>7} {'build s':>8} {'run s':>8}")
    for r in rows:
        print(
            f"{r['variant']:<26} {r['total_steps']:6d} {r['step_ms']:8.2f} {r['eval_s']:7.2f} "
            f"{r['build_s']:8.2f} {r['run_s']:8.1f}"
        )
    print(
        f"whole part: {seeds} seeds x {len(rows)} variants = {seeds * len(rows)} runs, {part_s:.0f} CPU s "
        f"({part_s / 3600:.2f} h on one core; / 2 on the study's two workers)"
    )
    if whole:
        print(
            f"check: {whole['variant']} trained whole by fit: {whole['measured_s']:.1f} CPU s, extrapolated "
            f"{whole['extrapolated_s']:.1f} s"
        )
    provenance = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "commit": commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0],
        "timed_steps": args.steps,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "provenance": provenance,
                "write_s": write_s,
                "load_s": load_s,
                "rows": rows,
                "part_s": part_s,
                "whole": whole,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
