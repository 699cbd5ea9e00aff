"""`normlab bench loop|layers|kernels`: each benchmark prints a table and writes JSON."""

from __future__ import annotations

from pathlib import Path

from normlab.bench.kernels.run import DryRunFailed, bench_kernels
from normlab.bench.layers_cpu import bench_layers_cpu
from normlab.bench.training_loop import bench_training_loop, split_norms
from normlab.commands.common import fail


def loop(
    device: str,
    samples: int,
    repeats: int,
    workers: int,
    norms: str,
    compile_model: bool,
    precision: str,
    cuda_graph: bool,
    threads: int | None,
    out: Path,
) -> None:
    """The seed notebook's training loop vs normlab's engine."""
    bench_training_loop(
        device=device,
        samples=samples,
        repeats=repeats,
        workers=workers,
        norms=split_norms(norms),
        compile_model=compile_model,
        precision=precision,
        cuda_graph=cuda_graph,
        threads=threads,
        out=str(out),
    )


def layers(threads: int | None, repeats: int, quick: bool, out: Path) -> None:
    """BatchNorm training step on CPU: normlab's reference vs torch's kernel."""
    bench_layers_cpu(threads=threads, repeats=repeats, quick=quick, out=str(out))


def kernels(quick: bool, v4: bool, sweep: bool, budget_s: float | None, dry_run: bool, out: Path) -> None:
    """normlab's Triton BatchNorm vs torch; a dry run whose results disagree exits 1."""
    try:
        bench_kernels(quick=quick, v4=v4, sweep=sweep, budget_s=budget_s, dry_run=dry_run, out=out)
    except DryRunFailed as exc:
        fail(str(exc), code=1)


__all__ = ["kernels", "layers", "loop"]
