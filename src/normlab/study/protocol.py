"""The study's shared protocol: every variant at its own learning rate, chosen on held-out data.

A part's file (package data, `normlab/study/configs/<part>.yaml`) names its variants:

```yaml
base:        {model: mlp, hidden: [100, 100], batch_size: 64, epochs: 30}   # every run
variants:    {none: {norm: none}, batch: {norm: batch}}        # tuned, each at its own lr
fixed:       {none @ notebook lr: {norm: none, lr: 1.0e-3}}    # run as written, not tuned
arms:        {none + wd: {of: none, optim.weight_decay: 1.0e-3}}  # a tuned variant's lr + changes
tune:        {lr: [3.0e-4, ..., 1.0e-1]}                       # optional: the part's lr grid
```

Two stages, every run an ordinary stored run (config-hash identity, resumable, never trained
twice):

1. **Selection.** Each variant x each lr of the half-decade grid x each *selection seed*
   (distinct from the evaluation seeds). A run's score is its best held-out accuracy over its
   evaluations (`holdout_acc_eval_mode`: the slice of the *training* split the engine holds
   out); an lr's score is the mean over selection seeds; an lr where any selection seed
   diverged or failed is not eligible. The highest score wins (ties: the smaller lr). The test split is
   never read here: `select_lrs` takes only the held-out metric.
2. **Evaluation.** Each variant at its selected lr x the evaluation seeds; `fixed` entries and
   `arms` likewise. Each run's number is its test accuracy at its best held-out epoch
   (`at_best_holdout`): the epoch is chosen on held-out data, the test value is read once.

The selected lr is never stored separately: it is derived, deterministically, from the stored
selection runs (the same function for `run_study` and for the report).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from normlab.experiments.config import PlannedRun
from normlab.experiments.errors import ConfigError
from normlab.experiments.keys import build_config, flatten
from normlab.experiments.store import Store
from normlab.train import metrics as M
from normlab.train.config import RunConfig

__all__ = [
    "ADAM_LR_GRID",
    "EVAL_SEEDS",
    "SELECTION_SEEDS",
    "SELECT_METRIC",
    "PartSpec",
    "Protocol",
    "Selection",
    "Variant",
    "at_best_holdout",
    "evaluation_runs",
    "parse_part",
    "select_lrs",
    "selection_runs",
]

ADAM_LR_GRID = (3.0e-4, 1.0e-3, 3.0e-3, 1.0e-2, 3.0e-2, 1.0e-1)
"""Half-decade steps from where Adam is far too slow for the budget (every variant's held-out
accuracy at 3e-4 is well below its best) to where it breaks (no norm at 1e-1)."""
SELECTION_SEEDS = (1000, 1001)
"""Seeds of the selection runs: never used for evaluation, so the reported numbers are not the
ones the lr was chosen on."""
EVAL_SEEDS = tuple(range(10))
"""Evaluation seeds: 10 per variant (3 seeds give ~40% power for a 2-SD effect)."""
SELECT_METRIC = M.HOLDOUT_ACC_EVAL_MODE
"""What selection reads: accuracy on the held-out slice of the training split (eval mode)."""

_PART_KEYS = ("title", "base", "variants", "fixed", "arms", "tune", "recalibrate")


@dataclass(frozen=True)
class Protocol:
    """The lr grid and seeds of a study (the default, or `--quick`'s smaller one). `lr_grid`
    None: each part's `tune.lr`, else ADAM_LR_GRID; a grid given here wins over the parts'."""

    lr_grid: tuple[float, ...] | None = None
    selection_seeds: tuple[int, ...] = SELECTION_SEEDS
    eval_seeds: tuple[int, ...] = EVAL_SEEDS


@dataclass(frozen=True)
class Variant:
    """One thing a part measures: a label and its (seedless) config.

    kind "tuned": selection over the lr grid, then evaluation at the selected lr;
    "fixed": evaluation at `config.lr` as written; "arm": evaluation at the selected lr of the
    tuned variant `of`, with its own changes.
    """

    label: str
    config: RunConfig
    kind: str = "tuned"
    of: str | None = None


@dataclass
class PartSpec:
    """A part's parsed file: its variants and lr grid."""

    key: str
    title: str
    variants: list[Variant]
    lr_grid: tuple[float, ...]
    recalibrate: tuple[str, ...] = ()
    spec: dict[str, Any] = field(default_factory=dict)

    def tuned(self) -> list[Variant]:
        return [v for v in self.variants if v.kind == "tuned"]


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
    return value


def parse_part(key: str, spec: dict[str, Any], protocol: Protocol, where: str = "") -> PartSpec:
    """A part's file (parsed YAML) -> PartSpec; every mistake is one ConfigError naming it."""
    unknown = sorted(set(spec) - set(_PART_KEYS))
    if unknown:
        raise ConfigError(f"{where}unknown top-level key(s) {unknown}; a part file has {list(_PART_KEYS)}")
    base = flatten(_mapping(spec.get("base"), f"{where}base"))
    for k in ("seed", "lr"):
        if k in base:
            raise ConfigError(f"{where}base.{k}: the protocol sets {k} (tuning and seeds); remove it")
    tune = _mapping(spec.get("tune"), f"{where}tune")
    try:
        grid = tuple(float(x) for x in (protocol.lr_grid or tune.get("lr") or ADAM_LR_GRID))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}tune.lr: expected a list of learning rates, got {tune.get('lr')!r}") from None
    if len(grid) < 1 or any(not (x > 0) for x in grid) or list(grid) != sorted(set(grid)):
        raise ConfigError(f"{where}tune.lr: expected increasing positive learning rates, got {list(grid)}")

    variants: list[Variant] = []
    for kind, section in (("tuned", "variants"), ("fixed", "fixed"), ("arm", "arms")):
        for label, entry in _mapping(spec.get(section), f"{where}{section}").items():
            entry = dict(_mapping(entry, f"{where}{section}.{label}"))
            of = entry.pop("of", None) if kind == "arm" else None
            flat = {**base, **flatten(entry)}
            if kind == "tuned" and "lr" in flat:
                raise ConfigError(
                    f"{where}variants.{label}: a tuned variant gets its lr from the "
                    "grid; move it to `fixed:` to run it at a given lr"
                )
            if kind == "arm" and of not in _mapping(spec.get("variants"), "variants"):
                raise ConfigError(f"{where}arms.{label}.of: expected a tuned variant's label, got {of!r}")
            config = build_config({**flat, "seed": 0}, f"{where}{section}.{label}: ")
            variants.append(Variant(str(label), config, kind, of))
    if not variants:
        raise ConfigError(f"{where}no variants: give `variants:` or `fixed:` at least one entry")
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}variant labels must be unique, got {labels}")
    recal = tuple(spec.get("recalibrate") or ())
    if not set(recal) <= set(labels):
        raise ConfigError(f"{where}recalibrate: expected variant labels from {labels}, got {list(recal)}")
    return PartSpec(key, str(spec.get("title") or key), variants, grid, recal, copy.deepcopy(spec))


def _with(config: RunConfig, **changes: Any) -> RunConfig:
    """A copy of `config` with top-level fields changed, validated again."""
    return RunConfig.model_validate({**config.resolved(), **changes})


def group_name(part: str, label: str) -> str:
    """The store group of a variant's runs: "<part>/<label>"."""
    return f"{part}/{label}"


def selection_runs(part: PartSpec, protocol: Protocol) -> list[PlannedRun]:
    """Stage 1: every tuned variant x lr grid x selection seed."""
    return [
        PlannedRun(_with(v.config, lr=lr, seed=s), group_name(part.key, v.label))
        for v in part.tuned()
        for lr in part.lr_grid
        for s in protocol.selection_seeds
    ]


def evaluation_runs(part: PartSpec, protocol: Protocol, selected: dict[str, Selection]) -> list[PlannedRun]:
    """Stage 2: each variant at its lr (selected, written, or its tuned variant's) x eval seeds.
    A tuned variant without a selection (every lr diverged) gets no evaluation runs."""
    runs = []
    for v in part.variants:
        if v.kind == "fixed":
            lr = v.config.lr
        else:
            chosen = selected.get(v.label if v.kind == "tuned" else v.of)
            if chosen is None or chosen.lr is None:
                continue
            lr = chosen.lr
        runs += [PlannedRun(_with(v.config, lr=lr, seed=s), group_name(part.key, v.label)) for s in protocol.eval_seeds]
    return runs


@dataclass(frozen=True)
class Selection:
    """One tuned variant's stage 1: the score of every lr and the chosen one.

    grid: lr, n (selection runs), diverged and failed (how many; failed includes not run yet),
    score (mean best held-out accuracy; NaN where not eligible). `lr` is None when no lr was eligible; `at_edge` is True when the
    chosen lr is the grid's smallest or largest (the grid may not contain the true optimum).
    """

    label: str
    grid: pd.DataFrame
    lr: float | None
    at_edge: bool


def run_scores(runs: pd.DataFrame, holdout: pd.DataFrame) -> pd.DataFrame:
    """Per selection run: its best held-out accuracy (`score`) and whether it diverged.

    runs: runs_frame rows (run_id, status, lr, variant); holdout: metrics rows of SELECT_METRIC
    only (run_id, value). Raises ValueError if any other metric is passed: selection must not
    see the test split.
    """
    if "name" in holdout and set(holdout["name"]) - {SELECT_METRIC}:
        raise ValueError(f"lr selection reads only {SELECT_METRIC!r}, got metrics {sorted(set(holdout['name']))}")
    best = holdout.groupby("run_id")["value"].max().rename("score")
    out = (
        runs[["run_id", "variant", "lr", "status"]]
        .drop_duplicates("run_id")
        .merge(best, left_on="run_id", right_index=True, how="left")
    )
    out["diverged"] = out["status"] == "diverged"
    out["failed"] = ~out["status"].isin(("finished", "diverged"))  # failed, or not run yet
    return out


def select_lrs(
    runs: pd.DataFrame, holdout: pd.DataFrame, grids: dict[str, tuple[float, ...]] | None = None
) -> dict[str, Selection]:
    """Stage 1's choice per variant (see the module docstring), from stored runs and their
    held-out metric only. runs: one row per (run, variant) with run_id, variant, lr, status."""
    scores = run_scores(runs, holdout)
    out = {}
    for label, rows in scores.groupby("variant", sort=False):
        table = (
            rows.groupby("lr")
            .agg(n=("run_id", "size"), diverged=("diverged", "sum"), failed=("failed", "sum"), score=("score", "mean"))
            .reset_index()
        )
        # an lr that broke a seed is out; so is one with a run missing (failed, or not run yet)
        table.loc[(table["diverged"] > 0) | (table["failed"] > 0), "score"] = np.nan
        eligible = table.dropna(subset=["score"])
        if eligible.empty:
            out[label] = Selection(label, table, None, False)
            continue
        # ties (to float noise: means of accuracies over a fixed slice) go to the smaller lr
        ranked = eligible.assign(key=eligible["score"].round(9))
        best = ranked.sort_values(["key", "lr"], ascending=[False, True]).iloc[0]
        grid = (grids or {}).get(label) or tuple(table["lr"])
        lr = float(best["lr"])
        out[label] = Selection(label, table, lr, bool(math.isclose(lr, min(grid)) or math.isclose(lr, max(grid))))
    return out


def at_best_holdout(runs: pd.DataFrame, metrics: pd.DataFrame, name: str = M.TEST_ACC) -> pd.DataFrame:
    """One number per run: metric `name` at the evaluation where the held-out accuracy was
    highest (first such; the epoch is chosen on held-out data, the test value read once).

    Returns the run columns + `value`, `best_step`, `best_epoch`; NaN for a run without both.
    """
    hold = metrics[metrics["name"] == SELECT_METRIC][["run_id", "step", "value"]]
    target = metrics[metrics["name"] == name][["run_id", "step", "epoch", "value"]]
    both = hold.merge(target, on=["run_id", "step"], suffixes=("_hold", ""))
    both = both[np.isfinite(both["value_hold"])]
    idx = both.sort_values(["run_id", "step"]).groupby("run_id")["value_hold"].idxmax()
    best = both.loc[idx, ["run_id", "value", "step", "epoch"]].rename(
        columns={"step": "best_step", "epoch": "best_epoch"}
    )
    out = runs.merge(best, on="run_id", how="left")
    out["value"] = out["value"].astype(float)
    return out


def stored_selection(store: Store, name: str) -> dict[str, dict[str, Selection]]:
    """Stage 1's choice per part and variant, derived from the stored selection runs of study
    `name`: {part key: {variant: Selection}}. Reads only the held-out metric."""
    experiment = f"{name}.select"
    if experiment not in store.experiments():
        return {}
    runs = store.runs_frame(experiment)
    holdout = store.metrics_frame(experiment, names=[SELECT_METRIC])
    if runs.empty:
        return {}
    part, _, label = runs["group"].str.partition("/").values.T
    runs = runs.assign(part=part, variant=label)
    return {
        key: select_lrs(rows, holdout[holdout["run_id"].isin(rows["run_id"])])
        for key, rows in runs.groupby("part", sort=False)
    }
