"""Part 3: usable learning rates, a badly scaled initialization, gradient flow over depth.

- LR range test: the lr grows x10 per epoch; per run, log10 of the lr at the lowest training
  loss (refined by a parabola through the three points around the minimum) and of the end of
  the usable range (where the smoothed loss climbs back above its starting value, linearly
  interpolated between the two logged points around the crossing, so the value is not
  quantized to the logging grid).
- init x5: each network's accuracy change from init x1 to x5, BN against no norm (each
  variant at its own lr).
- gradient flow: per-layer gradient norms of the hidden Linear weights at depths 2-16, at
  the first step (the gradient at initialization) and at step 50; "even flow" = a small
  spread (standard deviation over layers) of log10 gradient norm.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from normlab.analysis import plots
from normlab.analysis.render import FigureSpec, Finding, Section
from normlab.analysis.stats import NOT_SUPPORTED, SUPPORTED, verdict
from normlab.study.common import (
    ACC_MIN_EFFECT,
    BEST_ACC_LABEL,
    PCT,
    Literature,
    PartData,
    edge_notes,
    empty,
    layer_order,
    seed_change,
    selected_lrs_text,
    setup_text,
    values,
)
from normlab.train import metrics as M

KEY = "lr_init"
FILE = "lr_init.yaml"
QUICK = {
    "keep": [
        "none",
        "batch",
        "none, init x5",
        "batch, init x5",
        "none, lr range test",
        "batch, lr range test",
        "none, depth 2",
        "batch, depth 2",
        "none, depth 4",
        "batch, depth 4",
    ],
    "set": {"epochs": 2},
    "set_fixed": {},
}

LOG_LR_MIN_EFFECT = 0.1  # log10 lr: a factor of 1.26, a fifth of the range test's decade per epoch
SPREAD_MIN_EFFECT = 0.1  # log10 gradient norm: a factor of 1.26 between layers
EARLY_STEP = 50

LITERATURE = [
    Literature(
        "BN allows higher learning rates",
        "Bjorck et al. (2018): BN's main benefit is the larger learning rates it allows; without BN large lrs diverge.",
        SUPPORTED,
    ),
    Literature(
        "less sensitive to a badly scaled initialization",
        "Ioffe & Szegedy (2015): BN lets one be less careful about initialization.",
        SUPPORTED,
    ),
    Literature(
        "at initialization",
        "Yang et al. (2019): at initialization the gradients of deep BN networks explode with depth, "
        "so BN does not by itself give even gradient flow.",
        NOT_SUPPORTED,
    ),
    Literature(
        "at step",
        "Santurkar et al. (2018): BN makes the loss landscape and gradients smoother during "
        "training; no prediction for this per-layer spread.",
        None,
    ),
]


def lr_curves(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Per run and logging step: the learning rate and the training loss (NaN if diverged)."""
    loss = metrics[metrics["name"] == M.TRAIN_LOSS][["run_id", "step", "value"]].rename(columns={"value": "loss"})
    lr = metrics[metrics["name"] == M.LR][["run_id", "step", "value"]].rename(columns={"value": "lr"})
    both = loss.merge(lr, on=["run_id", "step"]).merge(runs[["run_id", "variant", "seed"]], on="run_id")
    return both.sort_values(["run_id", "step"])


def _parabola_min(x: np.ndarray, y: np.ndarray, i: int) -> float:
    """x of the vertex of the parabola through points i-1, i, i+1 (x[i] at an end or if flat)."""
    if i == 0 or i == len(x) - 1 or not np.all(np.isfinite(y[i - 1 : i + 2])):
        return float(x[i])
    x0, x1, x2 = x[i - 1 : i + 2]
    y0, y1, y2 = y[i - 1 : i + 2]
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / denom
    return float(np.clip(-b / (2 * a), x0, x2)) if a > 0 else float(x[i])


def lr_stats(curves: pd.DataFrame) -> pd.DataFrame:
    """Per run: `best` (log10 lr at the lowest 3-point smoothed loss) and `max_usable` (log10
    lr where the smoothed loss first climbs back above its start after the minimum; a diverged
    (NaN) point counts as above; `censored` when it never does)."""
    rows = []
    for run_id, run in curves.groupby("run_id"):
        loss = run["loss"].where(np.isfinite(run["loss"]))
        smooth = loss.rolling(3, min_periods=1, center=True).mean().to_numpy(copy=True)
        smooth[~np.isfinite(loss.to_numpy())] = np.nan  # smoothing must not hide a divergence
        x = np.log10(run["lr"].to_numpy(dtype=float))
        if not np.isfinite(smooth).any():
            continue
        best = int(np.nanargmin(smooth))
        start = smooth[0]
        after = np.nonzero(~(smooth[best:] <= start))[0]
        censored = not after.size
        if censored:
            end = float(x[-1])
        else:
            j = best + int(after[0])  # first point above the start (or NaN)
            lo, hi = smooth[j - 1], smooth[j]
            if np.isfinite(hi) and hi != lo:
                end = float(x[j - 1] + (start - lo) / (hi - lo) * (x[j] - x[j - 1]))
            else:  # diverged between the two points: the middle of the interval
                end = float((x[j - 1] + x[j]) / 2)
        rows.append(
            {
                "run_id": run_id,
                "variant": run["variant"].iloc[0],
                "best": _parabola_min(x, smooth, best),
                "max_usable": end,
                "censored": censored,
            }
        )
    return pd.DataFrame(rows, columns=["run_id", "variant", "best", "max_usable", "censored"])


def layer_grad_frame(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """grad_norm/<hidden Linear weight> rows: run_id, variant, seed, step, layer (0-based index
    of the hidden layer), value."""
    names = [n for n in metrics["name"].unique() if n.startswith("grad_norm/blocks.") and n.endswith(".linear.weight")]
    rows = metrics[metrics["name"].isin(names)].copy()
    if rows.empty:
        return pd.DataFrame(columns=["run_id", "variant", "seed", "step", "layer", "value"])
    rows["layer"] = rows["name"].map(lambda n: layer_order(n.removeprefix("grad_norm/"))[0])
    return rows.merge(runs[["run_id", "variant", "seed"]], on="run_id")[
        ["run_id", "variant", "seed", "step", "layer", "value"]
    ]


def layer_spread(grads: pd.DataFrame, step: int) -> pd.DataFrame:
    """Per run at `step`: standard deviation over hidden layers of log10 gradient norm."""
    at = grads[(grads["step"] == step) & (grads["value"] > 0)]
    spread = at.groupby("run_id")["value"].agg(lambda v: float(np.std(np.log10(v.to_numpy()))))
    meta = at.drop_duplicates("run_id").set_index("run_id")[["variant", "seed"]]
    return meta.assign(value=spread).reset_index()


def section(data: PartData) -> Section:
    title = "3. Learning rate, initialization and gradient flow"
    if data.runs.empty:
        return empty(title)
    sec = Section(
        title,
        setup_text(
            data,
            (
                "LR range test: the lr grows x10 per epoch from 1e-5 and the training loss is recorded every 10 "
                "steps. Initialization: every weight multiplied by 5, then trained as usual. Depth: MLPs of 2-16 "
                "hidden layers of 100 units, Adam 1e-3, per-layer gradient norms at each of the first 50 steps."
            ),
        ),
    )
    sec.notes += edge_notes(data)

    rng = data.of("none, lr range test", "batch, lr range test")
    if not rng.empty:
        rng = rng.assign(variant=rng["norm"])
        curves = lr_curves(rng, data.metrics)
        stats = lr_stats(curves)
        for column, what in (("best", "the lowest training loss"), ("max_usable", "the end of the usable range")):
            sec.findings.append(
                Finding(
                    f"BN allows higher learning rates: {what} is at a higher lr.",
                    verdict(
                        stats.loc[stats["variant"] == "batch", column],
                        stats.loc[stats["variant"] == "none", column],
                        min_effect=LOG_LR_MIN_EFFECT,
                        what=f"log10 lr at {what}",
                    ),
                )
            )
        if stats["censored"].any():
            sec.notes.append(
                f"{int(stats['censored'].sum())} range-test run(s) never climbed back above "
                "their starting loss; their end of range is the last lr (a lower bound)."
            )
        sec.figures.append(
            FigureSpec(
                "lr_range",
                plots.plot_lr_range(
                    curves,
                    title="Learning-rate range test",
                    budget="lr x10 per 50 steps",
                    marks={
                        k: s.lr for k, s in data.selection.items() if k in set(curves["variant"]) and s.lr is not None
                    },
                ),
                "Training loss (mean over seeds) as the lr grows x10 per epoch (50 steps); the dot marks "
                "the lowest loss, the dashed line each variant's selected lr (stage 1), the one its verdicts use: "
                + ", ".join(
                    f"{k} {s.lr:.0e}" for k, s in data.selection.items() if s.lr is not None and "init" not in k
                )
                + ".",
            )
        )

    if data.has("none", "batch", "none, init x5", "batch, init x5"):
        acc = data.best("none", "batch", "none, init x5", "batch, init x5")
        sec.findings.append(
            Finding(
                "BN makes training less sensitive to a badly scaled initialization (weights x5): it loses "
                "less accuracy than the network without BN (each at its own lr).",
                verdict(
                    seed_change(acc, "batch", "batch, init x5"),
                    seed_change(acc, "none", "none, init x5"),
                    min_effect=ACC_MIN_EFFECT,
                    what="accuracy change from init x1 to x5, batch vs none",
                    **PCT,
                ),
            )
        )
        sec.figures.append(
            FigureSpec(
                "init_final_acc",
                plots.plot_final_accuracy(
                    acc,
                    order=["none", "none, init x5", "batch", "batch, init x5"],
                    title="Initialization scale",
                    ylabel=BEST_ACC_LABEL,
                ),
                f"Test accuracy at the best held-out epoch per norm and initial weight scale ({data.budget('batch')}, "
                "each at its own lr).",
            )
        )

    depth_labels = [v for v in data.runs["variant"].unique() if ", depth " in v]
    grads = layer_grad_frame(data.of(*depth_labels), data.metrics)
    if not grads.empty:
        deepest = max(int(v.rsplit(" ", 1)[1]) for v in depth_labels)
        for step, when in ((1, "at initialization (the first step's gradient)"), (EARLY_STEP, f"at step {EARLY_STEP}")):
            spread = layer_spread(grads, step)
            if spread.empty:
                continue
            sec.findings.append(
                Finding(
                    f"BN improves gradient flow in a {deepest}-layer MLP {when}: the gradient norms of its "
                    "hidden layers are more even.",
                    verdict(
                        values(spread, variant=f"batch, depth {deepest}"),
                        values(spread, variant=f"none, depth {deepest}"),
                        higher_is_better=False,
                        min_effect=SPREAD_MIN_EFFECT,
                        what="std over layers of log10 gradient norm",
                    ),
                )
            )
            table_rows = spread.assign(
                depth=spread["variant"].str.rsplit(" ", n=1).str[1].astype(int),
                norm=spread["variant"].str.split(",").str[0],
            )
            summary = table_rows.groupby(["depth", "norm"])["value"].mean().unstack("norm")
            sec.measured.append(
                f"Mean spread of log10 gradient norm over layers {when}, per depth: "
                + "; ".join(
                    f"depth {d}: " + ", ".join(f"{n} {summary.loc[d, n]:.2f}" for n in summary.columns)
                    for d in summary.index
                )
            )
        init = grads[grads["step"] == 1]
        sec.figures.append(
            FigureSpec(
                "grad_flow_init",
                plots.plot_curves(
                    init,
                    x="layer",
                    title="Gradient norm per hidden layer at initialization",
                    ylabel="gradient norm of the layer's weight",
                    logy=True,
                ),
                "Gradient norm of each hidden Linear weight (x: layer index, input side first) at the first step, "
                "mean over seeds and 95% CI, per norm and depth (Adam 1e-3, batch size 64).",
            )
        )
    if (selected := selected_lrs_text(data)) is not None:
        sec.measured.append(selected)
    return sec
