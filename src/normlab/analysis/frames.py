"""Tidy frames from the store's two tables, ready for `stats` and `plots`.

The store gives `runs` (one row per run: run_id, experiment, status, group, seconds and one
column per flattened config key such as `norm`, `batch_size`, `seed`) and `metrics` (one row
per measurement: run_id, step, epoch, name, value). Everything here is a join or a group-by of
those two, so the analysis can be rebuilt from the store anywhere, without training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "BOOKKEEPING_COLUMNS",
    "varying_keys",
    "label_runs",
    "curve_frame",
    "final_frame",
]

# Run columns that are not config keys (or that never define a variant).
BOOKKEEPING_COLUMNS = frozenset(
    {
        "run_id",
        "experiment",
        "status",
        "group",
        "seconds",
        "steps",
        "started_at",
        "finished_at",
        "error",
        "seed",
        "variant",
        "data_root",
        "device",
        "value",
    }
)
# Column prefixes of per-run results and environment, never part of a variant's name.
BOOKKEEPING_PREFIXES = ("final.", "env.")


def varying_keys(runs: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Config columns whose value differs between runs (seed and bookkeeping excluded)."""
    keys = []
    for column in runs.columns:
        if column in BOOKKEEPING_COLUMNS or column in exclude or column.startswith(BOOKKEEPING_PREFIXES):
            continue
        values = runs[column].map(lambda v: repr(v) if isinstance(v, (list, dict)) else v)
        if values.nunique(dropna=False) > 1:
            keys.append(column)
    return keys


def label_runs(runs: pd.DataFrame, keys: Sequence[str] | None = None) -> pd.Series:
    """A readable variant label per run, e.g. "norm=batch, batch_size=64" (seed left out).

    With one key the label is the bare value ("batch"); with no varying key it is "all".
    """
    keys = list(varying_keys(runs) if keys is None else keys)
    if not keys:
        return pd.Series("all", index=runs.index, name="variant")
    if len(keys) == 1:
        return runs[keys[0]].astype(str).rename("variant")
    return runs[keys].apply(lambda row: ", ".join(f"{k}={row[k]}" for k in keys), axis=1).rename("variant")


def _with_variant(runs: pd.DataFrame, keys: Sequence[str] | None) -> pd.DataFrame:
    runs = runs.copy()
    if "variant" not in runs.columns:
        runs["variant"] = label_runs(runs, keys)
    return runs


def curve_frame(
    runs: pd.DataFrame,
    metrics: pd.DataFrame,
    name: str,
    keys: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One metric over training joined to its run's config: run columns + step, epoch, value.

    Rows with non-finite values (a diverged run) are kept; the plots and stats drop them.
    """
    runs = _with_variant(runs, keys)
    rows = metrics[metrics["name"] == name][["run_id", "step", "epoch", "value"]]
    return rows.merge(runs, on="run_id", how="inner").sort_values(["variant", "run_id", "step"])


def final_frame(
    runs: pd.DataFrame,
    metrics: pd.DataFrame,
    name: str,
    keys: Sequence[str] | None = None,
    how: str = "last",
) -> pd.DataFrame:
    """One number per run: the metric's last value ("last"), "max", "min" or "median".

    Returns the run columns + `value`; a run that never logged the metric gets NaN (so it is
    counted as missing, never silently dropped from the table of runs).
    """
    reducers = ["last", "max", "min", "median"]  # pandas aggregation names
    if how not in reducers:
        raise ValueError(f"final_frame: how must be one of {reducers}, got {how!r}")
    runs = _with_variant(runs, keys)
    rows = metrics[metrics["name"] == name].sort_values(["run_id", "step"])
    per_run = rows.groupby("run_id")["value"].agg(how).rename("value")
    out = runs.merge(per_run, left_on="run_id", right_index=True, how="left")
    out["value"] = out["value"].astype(float).replace([np.inf, -np.inf], np.nan)
    return out
