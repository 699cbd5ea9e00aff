"""Part 8: does BN work by reducing internal covariate shift? Santurkar et al. (2018)'s tests.

  (a) ICS as they define it: layer k's gradient before vs after the layers before it take
      their step (same batch), as cos(G_k, G'_k) and ||G_k - G'_k||, mean over layers 2..K,
      at the end of training (and at init, in the table); over training: the same at init, at
      about 4 points between and at the end (a figure, a table row per point, and the mean
      over the points after init as its own claim);
  (b) noisy BN: BN followed by noise whose mean and scale change every step, i.e. *more*
      distribution shift: does it train worse than BN, and still better than no norm?
  (c) the landscape along the gradient (step sizes 0.05-0.4): loss variation, gradient change
      and effective beta-smoothness, compared on a log scale (ratios), at the end of training.

The measurements are stored by `normlab.study.mechanisms.measure_mechanisms` (the points
between init and the end by replaying each run with the engine's probe on). The verdict on
"BN works by reducing ICS" is composed from (a)-(c) by `synthesis`, after the p adjustment.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from normlab.analysis import plots
from normlab.analysis.render import FigureSpec, Finding, Section
from normlab.analysis.stats import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, verdict
from normlab.study.common import (
    BEST_ACC_LABEL,
    Literature,
    PartData,
    acc_claim,
    edge_notes,
    empty,
    selection_table,
    setup_text,
    verdict_label,
)
from normlab.study.mechanisms import TRACE_DONE

KEY = "ics"
FILE = "ics.yaml"
QUICK = {"set": {"epochs": 2}}

NOISY = "noisy batch"
COS_MIN_EFFECT = 0.02  # cosine units
LOG_MIN_EFFECT = math.log10(1.25)  # a 25% ratio on the landscape numbers

CLAIM_ICS = "BN reduces internal covariate shift"
CLAIM_ICS_TRACE = "Over training, BN reduces internal covariate shift"
CLAIM_NOISY = "Noisy BN, which adds distribution shift, trains worse than BN"
CLAIM_NOISY_NONE = "Noisy BN still trains better than no normalization"
CLAIM_SMOOTH = "BN makes the loss landscape smoother"
LANDSCAPE = {
    "landscape/beta": f"{CLAIM_SMOOTH}: a smaller effective beta-smoothness along the gradient (Fig. 4c).",
    "landscape/grad_change": "With BN the gradient is more predictive: it changes less along the gradient "
    "direction (Fig. 4b).",
    "landscape/loss_range": "With BN the loss varies less along the gradient direction (Fig. 4a).",
}

LITERATURE = [
    Literature(
        CLAIM_ICS_TRACE,  # first: its claim contains CLAIM_ICS
        "Santurkar et al. (2018), Fig. 3: measured at several points of training (VGG on CIFAR-10, a "
        "25-layer deep linear network), ICS with BN is similar or larger (cosine as low or lower, l2 "
        "difference as large or larger) than without.",
        NOT_SUPPORTED,
    ),
    Literature(
        CLAIM_ICS,
        "Santurkar et al. (2018), Fig. 3: with BN, ICS so measured is not smaller (often larger; the "
        "cosine between G and G' is close to 0 with and without BN in their deep linear network).",
        NOT_SUPPORTED,
    ),
    Literature(
        CLAIM_NOISY,
        "Santurkar et al. (2018), Fig. 2: noisy BN trains about as well as BN, despite a much less "
        "stable distribution of each layer's input.",
        NOT_SUPPORTED,
    ),
    Literature(
        CLAIM_NOISY_NONE,
        "Santurkar et al. (2018), Fig. 2: noisy BN and BN both train faster and better than the network without BN.",
        SUPPORTED,
    ),
    Literature(
        "beta-smoothness",
        "Santurkar et al. (2018), Fig. 4: with BN the effective beta-smoothness is much smaller.",
        SUPPORTED,
    ),
    Literature(
        "more predictive",
        "Santurkar et al. (2018), Fig. 4b: with BN the gradient changes less along the gradient.",
        SUPPORTED,
    ),
    Literature(
        "loss varies less",
        "Santurkar et al. (2018), Fig. 4a: with BN the loss varies much less along the gradient.",
        SUPPORTED,
    ),
]


def per_run(data: PartData, labels: tuple[str, ...], where: str) -> pd.DataFrame:
    """One row per run of `labels`: mean ICS cosine and l2 over layers 2..K, and the landscape
    numbers, at step 0 (`where="init"`) or the run's last measured step ("end")."""
    runs = data.of(*labels).drop_duplicates("run_id")
    m = data.metrics[data.metrics["run_id"].isin(runs["run_id"]) & data.metrics["name"].str.match(r"^(ics|landscape)/")]
    if m.empty:
        return pd.DataFrame()
    if where == "init":
        m = m[m["step"] == 0]
    else:
        last = m.groupby("run_id")["step"].transform("max")
        m = m[(m["step"] == last) & (last > 0)]
    rows = []
    for run_id, run in m.groupby("run_id"):
        named = dict(zip(run["name"], run["value"]))
        cos = [v for k, v in named.items() if k.startswith("ics/") and k.endswith("/cos")]
        l2 = [v for k, v in named.items() if k.startswith("ics/") and k.endswith("/l2")]
        row = {
            "run_id": run_id,
            "ics_cos": float(np.mean(cos)) if cos else np.nan,
            "ics_l2": float(np.mean(l2)) if l2 else np.nan,
        }
        row.update({k: named.get(k, np.nan) for k in LANDSCAPE})
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.merge(runs[["run_id", "variant", "seed"]], on="run_id") if len(frame) else frame


def over_training(data: PartData, labels: tuple[str, ...]) -> pd.DataFrame:
    """One row per (run, measuring point) of the runs of `labels` measured between init and the
    end (`mechanisms.trace`): run_id, variant, seed, step, ics_cos, ics_l2 (means over layers
    2..K) and the LANDSCAPE numbers; every point of such a run, init and end included. Empty
    when no run has them."""
    runs = data.of(*labels).drop_duplicates("run_id")
    m = data.metrics[data.metrics["run_id"].isin(runs["run_id"]) & data.metrics["name"].str.match(r"^(ics|landscape)/")]
    if m.empty:
        return pd.DataFrame()
    m = m[m.groupby("run_id")["step"].transform("nunique") > 2]  # init, the end and a point between
    if m.empty:
        return pd.DataFrame()
    ics = m["name"].str.extract(r"^ics/\d+/(cos|l2)$", expand=False)
    column = ("ics_" + ics).where(ics.notna(), m["name"])  # ics/<k>/cos -> ics_cos (mean over k)
    frame = (
        m.assign(column=column)
        .pivot_table(index=["run_id", "step"], columns="column", values="value", aggfunc="mean")
        .reset_index()
    )
    frame.columns.name = None
    return frame.merge(runs[["run_id", "variant", "seed"]], on="run_id")


def _inside(trace: pd.DataFrame) -> pd.DataFrame:
    """The points strictly between each run's init and its end."""
    if trace.empty:
        return trace
    return trace[(trace["step"] > 0) & (trace["step"] < trace.groupby("run_id")["step"].transform("max"))]


def _trace_means(trace: pd.DataFrame) -> pd.DataFrame:
    """Per run: ics_cos averaged over its measuring points after init."""
    after = trace[trace["step"] > 0]
    return after.groupby(["run_id", "variant"], as_index=False)["ics_cos"].mean()


def _col(frame: pd.DataFrame, variant: str, column: str, log: bool = False) -> np.ndarray:
    v = frame.loc[frame["variant"] == variant, column].to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return np.log10(v[v > 0]) if log else v


def section(data: PartData) -> Section:
    title = "8. Internal covariate shift: Santurkar et al. 2018"
    if data.runs.empty or not data.has("none", "batch"):
        return empty(title)
    labels = tuple(x for x in ("none", "batch", NOISY) if data.has(x))
    end, init = per_run(data, labels, "end"), per_run(data, labels, "init")
    trace = over_training(data, labels)
    inside = _inside(trace)
    between = ""
    if not inside.empty:
        steps = [str(int(p)) for p in sorted(inside["step"].unique())]
        between = (
            f", and over training at step{'s' if len(steps) > 1 else ''} {', '.join(steps)} "
            "(each run trained again from its seed with the engine's probe on, kept only where its "
            "end-of-training numbers equal its checkpoint's bit for bit)"
        )
    sec = Section(
        title,
        setup_text(
            data,
            (
                f"The MLP of part 1 without BN, with BN and with noisy BN ({data.budget(*labels)}), each at its own lr. "
                "On 4 of each run's training batches, at its initialization and its end" + between + ": ICS of each "
                "layer (its gradient before vs after the layers before it take the run's optimizer step, Santurkar et "
                "al.'s Definition 2.1) and the loss and gradient along the gradient direction at step sizes 0.05 to 0.4."
            ),
        ),
    )
    sec.notes += edge_notes(data)
    failed = data.metrics[
        (data.metrics["name"] == TRACE_DONE)
        & (data.metrics["value"] == 0)
        & data.metrics["run_id"].isin(data.of(*labels)["run_id"])
    ]
    if len(failed):
        sec.notes.append(
            f"{failed['run_id'].nunique()} run(s) could not be replayed bit for bit: their points "
            "between init and the end are left out."
        )
    if not end.empty:
        sec.findings.append(
            Finding(
                f"{CLAIM_ICS} (Santurkar et al.'s measure): after training, a layer's gradient changes less when the "
                "layers before it are updated first (higher cos(G, G'), mean over layers 2..K).",
                verdict(
                    _col(end, "batch", "ics_cos"),
                    _col(end, "none", "ics_cos"),
                    min_effect=COS_MIN_EFFECT,
                    what="cos(G, G') at the end",
                ),
            )
        )
    if not trace.empty and {"none", "batch"} <= set(trace["variant"]):
        # the whole run, not one point: Santurkar et al. measure ICS throughout training (Fig. 3)
        points = sorted(trace.loc[trace["step"] > 0, "step"].unique())
        means = _trace_means(trace)
        sec.findings.append(
            Finding(
                f"{CLAIM_ICS_TRACE}: averaged over the {len(points)} measuring points after init (steps "
                f"{', '.join(str(int(p)) for p in points)}), cos(G, G') is higher with BN.",
                verdict(
                    _col(means, "batch", "ics_cos"),
                    _col(means, "none", "ics_cos"),
                    min_effect=COS_MIN_EFFECT,
                    what="cos(G, G') over training",
                ),
            )
        )
    best = data.best(*labels)
    if NOISY in labels:
        sec.findings.append(
            acc_claim(f"{CLAIM_NOISY} (Santurkar et al. Fig. 2).", best, "batch", NOISY, BEST_ACC_LABEL)
        )
        sec.findings.append(acc_claim(f"{CLAIM_NOISY_NONE}.", best, NOISY, "none", BEST_ACC_LABEL))
    if not end.empty:
        for column, claim in LANDSCAPE.items():
            sec.findings.append(
                Finding(
                    claim,
                    verdict(
                        _col(end, "batch", column, log=True),
                        _col(end, "none", column, log=True),
                        higher_is_better=False,
                        min_effect=LOG_MIN_EFFECT,
                        what=f"log10 {column.split('/')[1]} at the end",
                    ),
                )
            )
        sec.table = _table(init, end, trace)
        sec.measured.append(
            "Table: means over seeds of ICS (layers 2..K) and the landscape numbers, at init, "
            + ("at each measuring point of training, " if not trace.empty else "")
            + "and at the end of training."
        )
        sec.figures.append(
            FigureSpec(
                "ics_cosine",
                plots.plot_final_accuracy(
                    end[["variant", "ics_cos"]].rename(columns={"ics_cos": "value"}),
                    title="ICS at the end of training",
                    ylabel="cos(G, G')",
                    order=list(labels),
                ),
                "cos(G_k, G'_k), mean over layers 2..K, per run at the end of training: 1 = no shift.",
            )
        )
        sec.figures.append(
            FigureSpec(
                "ics_beta",
                plots.plot_final_accuracy(
                    end[["variant", "landscape/beta"]].rename(columns={"landscape/beta": "value"}),
                    title="Effective beta-smoothness at the end",
                    ylabel="max ||dG|| / ||eta g||",
                    order=list(labels),
                ),
                "Effective beta-smoothness along the gradient (step sizes 0.05-0.4), per run at the end of training.",
            )
        )
        _trace_figures(sec, trace)
    else:
        sec.notes.append(
            "ICS and the landscape were not measured (run normlab.study.mechanisms."
            "measure_mechanisms on the finished runs)."
        )
    if not end.empty and trace.empty:
        sec.notes.append(
            "ICS was not measured between init and the end (run normlab.study.mechanisms."
            "measure_mechanisms with these runs traced, or replaying them did not reproduce them)."
        )
    if data.selection and (sel := selection_table(data)) is not None and sec.table is None:
        sec.table = sel
    sec.measured.append(synthesis(sec))
    return sec


def _table(init: pd.DataFrame, end: pd.DataFrame, trace: pd.DataFrame) -> pd.DataFrame:
    """Means over seeds per variant: init, each point between ("step s"), the end."""
    table = []
    between = _inside(trace)
    for where, frame in (
        ("init", init),
        *((f"step {int(s)}", f) for s, f in (between.groupby("step") if not between.empty else [])),
        ("end", end),
    ):
        if frame.empty:
            continue
        for variant, rows in frame.groupby("variant"):
            table.append(
                {
                    "when": where,
                    "variant": variant,
                    "cos(G, G')": f"{rows['ics_cos'].mean():.3f}",
                    "||G - G'||": f"{rows['ics_l2'].mean():.3g}",
                    **{k.split("/")[1]: (f"{rows[k].mean():.3g}" if k in rows else "") for k in LANDSCAPE},
                }
            )
    return pd.DataFrame(table)


def _trace_figures(sec: Section, trace: pd.DataFrame) -> None:
    """cos(G, G') and ||G - G'|| against the training step, mean and 95% band over seeds."""
    if trace.empty:
        return
    for name, column, ylabel, logy, what in (
        ("ics_over_training", "ics_cos", "cos(G, G')", False, "cos(G_k, G'_k) (1 = no shift)"),
        ("ics_l2_over_training", "ics_l2", "||G - G'||", True, "||G_k - G'_k|| (0 = no shift; log scale)"),
    ):
        frame = trace[["variant", "seed", "step", column]].rename(columns={column: "value", "step": "training step"})
        sec.figures.append(
            FigureSpec(
                name,
                plots.plot_curves(
                    frame, x="training step", title=f"ICS over training: {ylabel}", ylabel=ylabel, logy=logy
                ),
                f"{what}, mean over layers 2..K, at init, the measuring points of training and the end: the mean "
                "over seeds and its 95% band (Santurkar et al. Fig. 3).",
            )
        )


def synthesis(sec: Section) -> str:
    """The verdict on "BN works by reducing internal covariate shift", from the section's own
    verdicts (call again after the study's p adjustment and use the last sentence)."""
    ics, noisy, smooth = (
        verdict_label(sec, CLAIM_ICS),
        verdict_label(sec, CLAIM_NOISY),
        verdict_label(sec, CLAIM_SMOOTH),
    )
    if ics is None and noisy is None:
        return "The ICS explanation could not be judged: neither ICS nor noisy BN was measured."
    against = [
        t
        for t, lab in (
            ("BN did not measurably reduce ICS", ics),
            ("noisy BN did not train measurably worse than BN", noisy),
        )
        if lab == NOT_SUPPORTED
    ]
    unclear = [
        t for t, lab in (("the ICS comparison", ics), ("the noisy-BN comparison", noisy)) if lab in (INCONCLUSIVE, None)
    ]
    smooth_text = {
        SUPPORTED: "while BN's loss landscape is measurably smoother",
        NOT_SUPPORTED: "and BN's loss landscape is not measurably smoother either",
        INCONCLUSIVE: "and the smoothness comparison is inconclusive",
    }.get(smooth or "", "")
    if ics == SUPPORTED and noisy == SUPPORTED:
        return (
            "Verdict on 'BN works by reducing internal covariate shift': consistent with these numbers "
            "(BN reduced ICS, and added shift hurt), against Santurkar et al.'s finding."
        )
    if against:
        return (
            "Verdict on 'BN works by reducing internal covariate shift': not supported here: "
            + "; ".join(against)
            + (f" ({', '.join(unclear)} inconclusive)" if unclear else "")
            + (f", {smooth_text}" if smooth_text else "")
            + ", as Santurkar et al. found."
        )
    return (
        "Verdict on 'BN works by reducing internal covariate shift': inconclusive at these seeds ("
        + ", ".join(unclear or ["mixed results"])
        + ")"
        + (f", {smooth_text}" if smooth_text else "")
        + "."
    )
