"""Part 5: Ioffe & Szegedy (2015) Fig. 1 on a 3x100 sigmoid MLP, each network at its own lr.

The distribution probed is what the last hidden layer's norm receives: the output of its
Linear layer (`act/blocks.2.linear/...`), before normalization. (The input of the sigmoid in
the BN network is BN's output, normalized per batch by construction, so its stability would
prove nothing.) Drift = how far the median of a unit's input moves over training, in units of
its mean 15th-85th percentile spread, averaged over the tracked units.
"""

from __future__ import annotations

import pandas as pd

from normlab.analysis import plots
from normlab.analysis.frames import curve_frame
from normlab.analysis.render import FigureSpec, Finding, Section
from normlab.analysis.stats import NOT_SUPPORTED, SUPPORTED, verdict
from normlab.study.common import (
    Literature,
    PartData,
    acc_claim,
    edge_notes,
    empty,
    hidden_text,
    layer_order,
    plateau_note,
    selection_table,
    setup_text,
    values,
)
from normlab.train import metrics as M

KEY = "ioffe2015"
FILE = "ioffe2015.yaml"
QUICK = {"set": {"epochs": 3, "probes.every_steps": 20}}

DRIFT_MIN_EFFECT = 0.1  # a tenth of the unit's spread

LITERATURE = [
    Literature(
        "With BN the sigmoid network trains to a higher test accuracy",
        "Ioffe & Szegedy (2015), Fig. 1a: with BN the sigmoid network trains faster and higher.",
        SUPPORTED,
    ),
    Literature(
        "keeps the distribution",
        "Ioffe & Szegedy (2015) show the input of the sigmoid (after BN) stable; Santurkar et al. (2018) "
        "found that BN does not reduce internal covariate shift measured before normalization, and that "
        "deliberately shifted BN outputs train as well.",
        NOT_SUPPORTED,
    ),
]


def percentile_frame(runs: pd.DataFrame, metrics: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Percentiles of the tracked units of the last hidden Linear layer's output:
    run_id, step, unit, p15, p50, p85 (+ variant, seed); and the layer's name."""
    keys = metrics["name"][metrics["name"].str.startswith("act/")].unique()
    parsed = [(k, M.parse_key(k)) for k in keys]
    parsed = [(k, p) for k, p in parsed if p["unit"] is not None and p["layer"].endswith(".linear")]
    if not parsed:
        return pd.DataFrame(), ""
    last = max((p["layer"] for _, p in parsed), key=layer_order)
    names = {k: (p["unit"], p["stat"]) for k, p in parsed if p["layer"] == last}
    rows = metrics[metrics["name"].isin(names)].copy()
    rows["unit"] = rows["name"].map(lambda n: names[n][0])
    rows["stat"] = rows["name"].map(lambda n: names[n][1])
    wide = rows.pivot_table(index=["run_id", "step", "unit"], columns="stat", values="value").reset_index()
    return wide.merge(runs[["run_id", "variant", "seed"]], on="run_id"), last


def drift(pct: pd.DataFrame) -> pd.DataFrame:
    """Per run: mean over units of (max - min of the median over training) / mean spread."""

    def one(unit: pd.DataFrame) -> float:
        width = float((unit["p85"] - unit["p15"]).mean())
        return float(unit["p50"].max() - unit["p50"].min()) / width if width > 0 else float("nan")

    per_unit = pct.groupby(["run_id", "unit"]).apply(one, include_groups=False).rename("value").reset_index()
    per_run = per_unit.groupby("run_id")["value"].mean().reset_index()
    return per_run.merge(pct.drop_duplicates("run_id")[["run_id", "variant", "seed"]], on="run_id")


def section(data: PartData) -> Section:
    title = "5. Internal covariate shift: Ioffe & Szegedy 2015, Fig. 1"
    if data.runs.empty or not data.has("none", "batch"):
        return empty(title)
    runs = data.of("none", "batch")
    sec = Section(
        title,
        setup_text(
            data,
            (
                f"An MLP of hidden {hidden_text(runs)} {runs['activation'].iloc[0]} units, {data.budget('none', 'batch')}, "
                "with and without BN; "
                "the output of the last hidden Linear layer (the input of its norm) is probed during training."
            ),
        ),
    )
    sec.notes += edge_notes(data)
    acc = data.best("none", "batch")
    sec.findings.append(
        acc_claim(
            "With BN the sigmoid network trains to a higher test accuracy (Fig. 1a).",
            acc,
            "batch",
            "none",
            "test accuracy at the best held-out epoch",
        )
    )
    pct, layer = percentile_frame(runs, data.metrics)
    if not pct.empty:
        per_run = drift(pct)
        sec.findings.append(
            Finding(
                f"BN keeps the distribution of a layer's input stable over training ({layer} output, before "
                "normalization): its median moves less, relative to its 15th-85th percentile spread (Fig. 1b vs 1c).",
                verdict(
                    values(per_run, variant="batch"),
                    values(per_run, variant="none"),
                    higher_is_better=False,
                    min_effect=DRIFT_MIN_EFFECT,
                    what="median drift / spread",
                ),
            )
        )
        first = pct[(pct["seed"] == pct["seed"].min()) & (pct["unit"] == pct["unit"].min())]
        sec.figures.append(
            FigureSpec(
                "ioffe2015_percentiles",
                plots.plot_percentiles(
                    first,
                    title=f"15th/50th/85th percentile of {layer}'s output, unit {int(pct['unit'].min())}",
                    order=["none", "batch"],
                ),
                f"Fig. 1b/c with the probe before normalization: percentiles of one unit of {layer}'s output "
                f"over optimizer steps (seed {int(pct['seed'].min())}), each network at its own lr.",
            )
        )
    curves = curve_frame(runs, data.metrics, M.HOLDOUT_ACC_EVAL_MODE)
    if not curves.empty:
        sec.figures.append(
            FigureSpec(
                "ioffe2015_holdout_acc",
                plots.plot_curves(curves, title="Held-out accuracy (Fig. 1a)", ylabel="held-out accuracy"),
                f"Held-out accuracy over optimizer steps ({data.budget('none', 'batch')}), mean over seeds with "
                "the 95% CI band.",
            )
        )
    sel = selection_table(data)
    if sel is not None:
        sec.table = sel
        sec.measured.append("Table: stage 1, mean best held-out accuracy (%) per lr and the selected lr.")
    note = plateau_note(data, ["none", "batch"])
    if note:
        sec.measured.append(note)
    return sec
