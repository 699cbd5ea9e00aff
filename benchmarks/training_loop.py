"""The seed notebook's training loop vs normlab's engine, on the seed's workload.

Workload (issue 4): the seed's MLP (flatten, Linear 512, norm, ReLU, Linear 256, norm, ReLU,
Linear 10) with and without BN, one epoch over `--samples` CIFAR-shaped synthetic uint8 images
(default 50,000), batch size 64, Adam lr 1e-3.

- seed-style: a `torch.utils.data.DataLoader` over a Dataset that converts and normalizes each
  sample (ToTensor + Normalize(0.5, 0.5) per image), batches copied to the device, the loss
  read back with `.item()` every step.
- engine: `normlab.train.fit` (device-resident BatchLoader, one host sync per 10 steps);
  its `epoch_seconds` metric (training steps only) and the whole `fit` call (set-up and the
  end-of-epoch evaluation included) are both reported.

Both run in one process, alternately, `--repeats` times; the table shows the median seconds
per epoch and the ratio seed-style / engine (> 1: the engine is faster). Target: >= 20x on a
GPU, >= 1x on CPU.

    PYTHONPATH=src python benchmarks/training_loop.py --device cpu --samples 5000 --threads 1
    python benchmarks/training_loop.py --device cuda --out training_loop.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


class PerSampleImages(torch.utils.data.Dataset):
    """The seed's dataset: each __getitem__ converts one uint8 image to a normalized float."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = self.x[i].float().div(255.0)  # ToTensor: (3, 32, 32) in [0, 1]
        return (img - 0.5) / 0.5, int(self.y[i])  # Normalize((0.5,) * 3, (0.5,) * 3)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seed_style_epoch(data, norm: str, device: torch.device, workers: int) -> float:
    """Seconds for one epoch of the seed notebook's loop."""
    from normlab.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", (3, 32, 32), 10, norm=norm).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(PerSampleImages(data.train_x, data.train_y),
                                         batch_size=64, shuffle=True, num_workers=workers)
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
        running += loss.item()
    sync(device)
    return time.perf_counter() - start


def engine_epoch(data, norm: str, device: torch.device, compile_model: bool = False,
                 precision: str = "fp32") -> tuple[float, float]:
    """(epoch_seconds, whole fit seconds) of normlab's engine on the same workload."""
    from normlab.train import RunConfig, fit

    config = RunConfig(dataset=data.name, model="mlp", norm=norm, batch_size=64, epochs=1,
                       lr=1e-3, optimizer="adam", holdout_fraction=0.0, device=str(device),
                       checkpoint_every_epochs=0, probes={"step_time": False},
                       compile=compile_model, precision=precision)
    values: dict[str, float] = {}
    start = time.perf_counter()
    fit(config, dataset=data, on_metrics=lambda s, e, v: values.update(v))
    sync(device)
    return values["epoch_seconds"], time.perf_counter() - start


def provenance(device: torch.device) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip()
    except OSError:
        commit = ""
    return {"torch": torch.__version__, "python": sys.version.split()[0],
            "platform": platform.platform(), "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "commit": commit, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--samples", type=int, default=50_000, help="training images (50,000 = CIFAR)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (seed-style)")
    parser.add_argument("--norms", default="batch,none", help="comma-separated norms")
    parser.add_argument("--compile", action="store_true", help="engine: torch.compile (GPU)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="engine: bf16 autocast (GPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default torch's; 1 on a shared CPU)")
    parser.add_argument("--out", default="training_loop.json", help="JSON output path")
    args = parser.parse_args(argv)
    if args.samples < 64:
        parser.error(f"--samples must be >= 64 (one batch), got {args.samples}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)

    from normlab.data import load_dataset

    data = load_dataset("synthetic", shape=(3, 32, 32), num_classes=10, train_size=args.samples,
                        test_size=1000, uint8=True)
    rows = []
    for norm in args.norms.split(","):
        engine = dict(compile_model=args.compile, precision=args.precision)
        engine_epoch(data, norm, device, **engine)  # warm-up: first-call allocations, lazy imports
        seed_t, engine_t, fit_t = [], [], []
        for _ in range(args.repeats):
            seed_t.append(seed_style_epoch(data, norm, device, args.workers))
            e, f = engine_epoch(data, norm, device, **engine)
            engine_t.append(e)
            fit_t.append(f)
        seed_s, engine_s, fit_s = (statistics.median(t) for t in (seed_t, engine_t, fit_t))
        rows.append({"model": f"mlp norm={norm}", "seed_style_s": seed_s, "engine_epoch_s": engine_s,
                     "engine_fit_s": fit_s, "speedup": seed_s / engine_s,
                     "speedup_whole_fit": seed_s / fit_s, "seed_style_all_s": seed_t,
                     "engine_epoch_all_s": engine_t})

    print(f"one epoch, {args.samples} images 3x32x32, batch 64, Adam 1e-3, device {device}, "
          f"median of {args.repeats}")
    print(f"{'model':<16} {'seed-style s':>13} {'engine s':>10} {'fit s':>8} {'ratio':>7} {'ratio fit':>10}")
    for r in rows:
        print(f"{r['model']:<16} {r['seed_style_s']:>13.3f} {r['engine_epoch_s']:>10.3f} "
              f"{r['engine_fit_s']:>8.3f} {r['speedup']:>6.1f}x {r['speedup_whole_fit']:>9.1f}x")
    result = {"benchmark": "training_loop", "samples": args.samples, "batch_size": 64,
              "repeats": args.repeats, "workers": args.workers, "compile": args.compile,
              "precision": args.precision, "rows": rows,
              "provenance": provenance(device)}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
