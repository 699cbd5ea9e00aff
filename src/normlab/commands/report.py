"""`normlab report`: the report of a stored experiment, or of a stored study."""

from __future__ import annotations

from pathlib import Path

import typer

from normlab.analysis.report import write_report
from normlab.study.report import stored_study, write_study_report


def report(experiment: str, out: Path) -> None:
    """Write the study's own report when `experiment` names a stored study, else the
    experiment's report; print where."""
    written = write_study_report(out, experiment) if stored_study(out, experiment) else write_report(out, experiment)
    typer.echo(str(written))


__all__ = ["report"]
