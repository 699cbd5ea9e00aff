"""`normlab study`: run the study's tier and write its report."""

from __future__ import annotations

from pathlib import Path

import typer

from normlab.study.run import run_study


def study(dataset: str, quick: bool, out: Path, executor: str, workers: int, tier: str) -> None:
    """Run the study's tier and print where its report is."""
    report_dir = run_study(dataset=dataset, quick=quick, out=str(out), executor=executor, workers=workers, tier=tier)
    typer.echo(f"report: {Path(report_dir) / 'report.html'}")


__all__ = ["study"]
