"""`normlab compare`: the final metric per group and variant, mean +- 95% CI over seeds."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from normlab.analysis.frames import final_frame, label_runs, varying_keys
from normlab.analysis.stats import summarize
from normlab.experiments.errors import StoreError
from normlab.experiments.store import Store


def compare(experiment: str, out: Path, metric: str) -> None:
    """Print the table of `metric`'s last value per run, summarized per group and variant."""
    with Store.open(out, create=False) as store:
        runs = store.runs_frame(experiment)
        metrics = store.metrics_frame(experiment, names=[metric])
    if metrics.empty:
        raise StoreError(f"experiment {experiment!r} has no {metric!r} values yet; check --metric or run it first")
    finals = final_frame(runs, metrics, metric)
    finals["variant"] = label_runs(finals, varying_keys(runs, exclude=("group",)))
    table = Table(title=f"{experiment}: final {metric}, mean +- 95% CI over seeds")
    for column in ("group", "variant", metric, "runs"):
        table.add_column(column)
    for (group, variant), rows in finals.groupby(["group", "variant"], sort=False):
        s = summarize(rows["value"])
        table.add_row(
            group or "-", str(variant), s.format(4), f"{len(rows)} ({(rows['status'] == 'finished').sum()} finished)"
        )
    Console().print(table)


__all__ = ["compare"]
