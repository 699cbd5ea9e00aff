"""The kernel benchmark's entry points: check where it can run, run the phases, write the JSON.

    normlab bench kernels [--quick] [--v4] [--sweep] [--budget-s S] [--dry-run] [--out FILE]
    PYTHONPATH=src python benchmarks/bn_kernels.py ...        # the same, without typer
    PYTHONPATH=src python benchmarks/bn_kernels_resources.py [--quick] [--out FILE]

`bench_kernels` runs the timing phases (the matrix, then the per-kernel breakdown) and, on
request, the tuning phases (`--v4`, `--sweep`); the JSON is rewritten after every phase and
every tuning entry, so a time-out keeps what was measured. `--dry-run` runs every phase on CPU
in Triton's interpreter on tiny shapes and fails when normlab and torch disagree.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
from dataclasses import asdict
from typing import Any

import torch

from normlab.bench.common import check_out, provenance, write_json
from normlab.experiments.errors import ConfigError, UserError


class DryRunFailed(RuntimeError):
    """The dry run found a phase that failed or normlab's results far from torch's: a bug."""


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _kernels_loaded() -> bool:
    """Whether Triton has decorated normlab's kernels in this process (then for good)."""
    return "normlab.kernels.triton_bn" in sys.modules


def _check_triton(command: str) -> None:
    # find_spec, not import: importing Triton here could come before the interpreter switch
    if importlib.util.find_spec("triton") is None:
        raise ConfigError(
            f"{command} needs Triton, which is not installed; install it with `pip install 'normlab[gpu]'`"
        )


def prepare(dry_run: bool) -> str:
    """The device the benchmark runs on: "cuda", or "cpu" with Triton's interpreter switched on
    for a dry run. Raises ConfigError where it cannot run, saying what to do instead."""
    _check_triton("normlab bench kernels")
    if dry_run:
        if _kernels_loaded() and not _interpreting():
            raise ConfigError(
                "--dry-run needs Triton's interpreter, which must be on before "
                "normlab's kernels are loaded, and this process loaded them "
                "compiled; run it in a fresh process"
            )
        os.environ["TRITON_INTERPRET"] = "1"
        return "cpu"
    if not torch.cuda.is_available():
        raise ConfigError(
            "normlab bench kernels times the Triton kernels on a CUDA GPU, and "
            f"none is visible (torch {torch.__version__}); run it on a GPU "
            "machine, or add --dry-run to run every phase on CPU in Triton's "
            "interpreter (tiny shapes: checks results, measures nothing)"
        )
    if _interpreting():
        raise ConfigError(
            "TRITON_INTERPRET=1 is set, so the kernels would run in Triton's "
            "interpreter instead of compiled; unset it to time them on the GPU, "
            "or add --dry-run"
        )
    return "cuda"


def bench_kernels(
    *,
    quick: bool = False,
    v4: bool = False,
    sweep: bool = False,
    budget_s: float | None = None,
    dry_run: bool = False,
    out: str | os.PathLike = "bn_kernels.json",
) -> dict[str, Any]:
    """Time normlab's Triton BatchNorm against torch; print the tables, write and return the JSON.

    Args:
        quick: float32 and bfloat16 only (no float16 rows).
        v4: then time the candidate knobs (`tuning.V4_KNOBS`) over the whole matrix.
        sweep: then time each candidate change alone (`tuning.V4_CHANGES`) on the large rows.
        budget_s: after this many seconds skip the remaining v4 rows and sweep entries (listed
            under "skipped"); None: no limit.
        dry_run: run every phase on CPU in Triton's interpreter on tiny shapes; raises
            DryRunFailed when a phase failed or normlab's results are far from torch's.
        out: the JSON file, rewritten after every phase.

    Returns:
        `{provenance, summary, rows, timing_s}` plus `v4` (`knobs, rows, skipped, summary,
        kernel_breakdown`) and `sweep` (`entries, skipped`) when asked; `timing_s` has each
        phase's end time in seconds since the start.

    Example:
        >>> result = bench_kernels(quick=True, out="bn_kernels.json")  # on a CUDA GPU
        >>> result["summary"]["geomean_speedup_gpu"]
    """
    if budget_s is not None and not budget_s > 0:
        raise ConfigError(f"--budget-s: expected a positive number of seconds, got {budget_s}")
    out_path = check_out(out)
    device = prepare(dry_run)
    # Imported after prepare(): they load normlab's kernels, and Triton reads TRITON_INTERPRET
    # when it decorates them.
    import triton

    from normlab.bench.kernels import tuning
    from normlab.bench.kernels.matrix import Clock, summarize
    from normlab.bench.kernels.timing import Target, breakdowns, run_matrix

    clock, target = Clock(budget_s), Target(device)
    result: dict[str, Any] = {
        "provenance": {
            **provenance(torch.device(device)),
            "triton": triton.__version__,
            "mode": "dry run (Triton interpreter)" if dry_run else "GPU",
        },
        "summary": {},
        "rows": [],
        "timing_s": {},
    }

    def save(phase: str | None = None) -> None:
        if phase:
            result["timing_s"][phase] = round(clock.elapsed(), 1)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1))

    matrix = target.matrix(quick)
    copy_bw = target.copy_bandwidth()
    if not dry_run:
        print(f"device {torch.cuda.get_device_name()}  copy bandwidth {copy_bw / 1e12:.2f} TB/s")
    result["rows"] = rows = run_matrix(target, matrix, copy_bw)
    result["summary"] = summarize(rows, copy_bw)
    print(json.dumps(result["summary"]))
    save("matrix")  # before the rest, so a time-out there keeps the main table
    print("forward kernels one by one (GPU time), adopted knobs:")
    result["summary"]["kernel_breakdown"] = breakdowns(target, matrix)
    save("breakdown")
    if v4:

        def on_v4_row(v4_rows, skipped):
            result["v4"] = {
                "knobs": {kind: asdict(k) for kind, k in tuning.V4_KNOBS.items()},
                "rows": v4_rows,
                "skipped": skipped,
            }
            save()

        on_v4_row(*tuning.run_v4(target, matrix, rows, copy_bw, clock, on_v4_row))
        result["v4"]["summary"] = summarize([r for r in result["v4"]["rows"] if "error" not in r], copy_bw)
        print("v4 summary:", json.dumps(result["v4"]["summary"]))
        if not clock.out_of_time():
            print("forward kernels one by one (GPU time), v4:")
            result["v4"]["kernel_breakdown"] = breakdowns(target, matrix, tuning.V4_KNOBS)
        save("v4")
    if sweep:

        def on_entry(entries, skipped):
            result["sweep"] = {"entries": entries, "skipped": skipped}
            save()

        plan = tuning.sweep_plan(matrix, sms=target.sms, min_mb=target.min_mb)
        on_entry(*tuning.run_sweep(target, plan, rows, clock, on_entry))
        save("sweep")
    write_json(result, out_path)
    if dry_run:
        check_dry_run(result)
        print("dry run ok")
    return result


def check_dry_run(result: dict[str, Any], tolerance: float = 2e-2) -> None:
    """Raise DryRunFailed if any phase recorded an error or normlab's y, dx, dw or db is more
    than `tolerance` (relative) from torch's: bf16 outputs round, float32 ones agree to ~1e-6."""
    v4, sweep = result.get("v4", {}), result.get("sweep", {})
    failed = [
        e
        for e in v4.get("rows", [])
        + sweep.get("entries", [])
        + result["summary"]["kernel_breakdown"]
        + v4.get("kernel_breakdown", [])
        if "error" in e
    ]
    errors = [e for r in result["rows"] + v4.get("rows", []) for e in r.get("rel_err", {}).values()]
    # max() skips a NaN unless it comes first: NaN outputs (or no rows) are no agreement
    worst = math.nan if not errors or any(map(math.isnan, errors)) else max(errors)
    if failed or not worst <= tolerance:
        raise DryRunFailed(
            f"dry run FAILED: {len(failed)} failed entries {failed}, worst "
            f"relative error {worst:.1e} (at most {tolerance:.0e} expected)"
        )


def bench_kernel_resources(
    *, quick: bool = False, out: str | os.PathLike = "bn_kernels_resources.json"
) -> dict[str, Any]:
    """Registers, spills and shared memory of every plan the GPU run makes (adopted knobs, each
    candidate change, the candidate set), compiled offline for an H100 (sm_90); no GPU needed.
    Prints one line per row and setting, writes and returns `{provenance, target, resources}`."""
    _check_triton("the kernel resources report")
    if _interpreting():
        raise ConfigError(
            "the kernel resources report compiles kernels for sm_90, which "
            "Triton's interpreter cannot: unset TRITON_INTERPRET"
        )
    out_path = check_out(out)
    # Imported here, once the interpreter is known to be off (see bench_kernels).
    from normlab.bench.kernels.matrix import cases
    from normlab.bench.kernels.resources import resources

    result = {
        "provenance": provenance(torch.device("cpu")),
        "target": "sm_90 (offline compile)",
        "resources": resources(cases(quick)),
    }
    write_json(result, out_path)
    return result


def main(argv: list[str] | None = None, job: str = "kernels") -> int:
    """The scripts' command line: `benchmarks/bn_kernels.py` (job "kernels") and
    `benchmarks/bn_kernels_resources.py` (job "resources"); returns the exit code."""
    doc = (bench_kernels if job == "kernels" else bench_kernel_resources).__doc__
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    default_out = "bn_kernels.json" if job == "kernels" else "bn_kernels_resources.json"
    parser.add_argument("--out", default=default_out, help="the JSON result file")
    parser.add_argument("--quick", action="store_true", help="float32 and bfloat16 rows only")
    if job == "kernels":
        parser.add_argument("--v4", action="store_true", help="then time the candidate knobs over the whole matrix")
        parser.add_argument(
            "--sweep", action="store_true", help="then time each candidate change alone on the rows >= 16 MB"
        )
        parser.add_argument(
            "--budget-s",
            type=float,
            default=None,
            metavar="SECONDS",
            help="skip the remaining --v4 rows and --sweep entries after this "
            "many seconds (listed as skipped in the JSON)",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="no GPU: every phase on CPU in Triton's interpreter, tiny shapes (checks results, measures nothing)",
        )
    args = parser.parse_args(argv)
    try:
        if job == "kernels":
            bench_kernels(
                quick=args.quick,
                v4=args.v4,
                sweep=args.sweep,
                budget_s=args.budget_s,
                dry_run=args.dry_run,
                out=args.out,
            )
        else:
            bench_kernel_resources(quick=args.quick, out=args.out)
    except UserError as exc:
        parser.error(str(exc))  # usage + the message on stderr, exit code 2
    except DryRunFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


__all__ = ["DryRunFailed", "bench_kernel_resources", "bench_kernels", "check_dry_run", "main", "prepare"]
