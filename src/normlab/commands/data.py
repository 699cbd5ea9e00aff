"""`normlab data info`: what is on disk for a dataset and what is missing."""

from __future__ import annotations

from pathlib import Path

import typer

from normlab.data import dataset_names, describe_data
from normlab.experiments.errors import ConfigError
from normlab.experiments.keys import suggest


def info(name: str, root: Path | None) -> None:
    """Print the description of dataset `name` under `root` (default $NORMLAB_DATA)."""
    names = dataset_names()
    if name.strip().lower() not in names:
        raise ConfigError(f"unknown dataset {name!r}{suggest(name, names)} (valid: {', '.join(names)})")
    typer.echo(describe_data(name, root))


__all__ = ["info"]
