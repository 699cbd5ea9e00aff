"""`normlab ls`: the experiments in a results folder, or one experiment's runs."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from normlab.experiments.store import STATUSES, Store


def ls(experiment: str | None, out: Path, as_json: bool) -> None:
    """Print each experiment's run count per status, or with `experiment` its runs."""
    with Store.open(out, create=False) as store:
        if experiment is None:
            table = {name: store.status_counts(name) for name in store.experiments()}
            if as_json:
                typer.echo(json.dumps(table))
                return
            if not table:
                typer.echo(f"no experiments in {out}")
            for name, counts in table.items():
                parts = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s))
                typer.echo(f"{name}: {sum(counts.values())} runs ({parts})")
            return
        rows = store.run_rows(experiment)
    if as_json:
        keep = ("run_id", "status", "seconds", "steps", "final", "error", "config")
        typer.echo(json.dumps([{"group": r["grp"]} | {k: r[k] for k in keep} for r in rows]))
        return
    for row in rows:
        acc = row["final"].get("test_acc")
        acc_text = f"test_acc {acc:.4f}" if acc is not None else ""
        typer.echo(f"{row['run_id']}  {row['grp'] or '-':<16} {row['status']:<9} {acc_text}")


__all__ = ["ls"]
