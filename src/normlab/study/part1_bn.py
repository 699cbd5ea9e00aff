"""Part 1: with vs without BN, each at its own lr; convergence speed; regularization.

Claims and how each is measured:
  - higher accuracy: test accuracy at each run's best held-out epoch (and, as a secondary
    row, at the seed notebook's Adam 1e-3);
  - faster convergence: steps until the held-out accuracy first reaches 95% of the weaker
    variant's mean best held-out accuracy;
  - regularization: the generalization gap (test loss minus training loss) at a *matched
    training loss* (the same training progress for both), and at each run's best held-out
    epoch; ghost batches of 16 (more batch noise) against BN over the full batch of 64;
  - "reduces the need for other regularizers": what weight decay adds for each network.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from normlab.analysis import plots
from normlab.analysis.frames import curve_frame
from normlab.analysis.render import FigureSpec, Finding, Section
from normlab.analysis.stats import SUPPORTED, verdict
from normlab.study.common import (
    ACC_MIN_EFFECT,
    BEST_ACC_LABEL,
    LOSS_MIN_EFFECT,
    PCT,
    Literature,
    PartData,
    acc_claim,
    edge_notes,
    empty,
    hidden_text,
    plateau_note,
    seed_change,
    selection_table,
    setup_text,
    steps_to,
    usable_range,
    values,
)
from normlab.train import metrics as M

KEY = "bn"
FILE = "bn.yaml"
QUICK = {"set": {"epochs": 2}}
"""`--quick`: what changes in the part's base config and which variants run."""

LITERATURE = [
    Literature(
        "BN makes the network reach a higher test accuracy",
        "Ioffe & Szegedy (2015) found BN reaching a higher accuracy (ImageNet, Inception); Bjorck et "
        "al. (2018) trace most of the gain to the larger learning rates BN allows, so with each "
        "variant at its own best lr the gap should shrink.",
        SUPPORTED,
    ),
    Literature("Secondary row", "At one shared lr, Ioffe & Szegedy's comparison: BN ahead.", SUPPORTED),
    Literature(
        "BN converges faster",
        "Ioffe & Szegedy (2015): BN reached the baseline's accuracy in 14x fewer steps.",
        SUPPORTED,
    ),
    Literature(
        "BN regularizes",
        "Luo et al. (2019) derive a regularizing effect from the noise of batch statistics; Ioffe & "
        "Szegedy (2015) report that BN reduces the need for dropout.",
        SUPPORTED,
    ),
    Literature(
        "More batch noise regularizes more",
        "Luo et al. (2019): the regularization grows as the batch statistics get noisier (smaller "
        "batches); ghost batches (Hoffer et al. 2017) use that knob.",
        SUPPORTED,
    ),
    Literature(
        "BN reduces the need for weight decay",
        "Ioffe & Szegedy (2015) report BN reducing the need for other regularizers; van Laarhoven "
        "(2017) shows that with BN weight decay acts through the effective lr instead.",
        SUPPORTED,
    ),
]


def gap_at_matched_loss(curves: pd.DataFrame, level: float) -> pd.DataFrame:
    """Per run: test loss minus training loss where the training loss first reaches `level`.

    curves: run_id, variant, seed, step, train (epoch_train_loss), test (test_loss), one row per
    evaluated epoch. Between the two evaluations around the crossing both losses are
    interpolated linearly in log training loss. A run that never gets down to `level`, or
    starts below it, has no value (it is not at the matched point).
    """
    rows = []
    for run_id, run in curves.sort_values("step").groupby("run_id"):
        train = run["train"].to_numpy(dtype=float)
        test = run["test"].to_numpy(dtype=float)
        ok = np.isfinite(train) & np.isfinite(test) & (train > 0)
        train, test = train[ok], test[ok]
        below = np.nonzero(train <= level)[0]
        value = math.nan
        if below.size and below[0] > 0:
            i = below[0]
            t0, t1 = math.log(train[i - 1]), math.log(train[i])
            w = (t0 - math.log(level)) / (t0 - t1) if t0 != t1 else 1.0
            value = (1 - w) * test[i - 1] + w * test[i] - level
        rows.append({"run_id": run_id, "variant": run["variant"].iloc[0], "seed": run["seed"].iloc[0], "value": value})
    return pd.DataFrame(rows, columns=["run_id", "variant", "seed", "value"])


def loss_curves(data: PartData, labels: list[str]) -> pd.DataFrame:
    """Per run and evaluated epoch: train (epoch_train_loss) and test (test_loss)."""
    runs = data.of(*labels)
    m = data.metrics
    train = m[m["name"] == M.EPOCH_TRAIN_LOSS][["run_id", "step", "value"]].rename(columns={"value": "train"})
    test = m[m["name"] == M.TEST_LOSS][["run_id", "step", "value"]].rename(columns={"value": "test"})
    return train.merge(test, on=["run_id", "step"]).merge(runs[["run_id", "variant", "seed"]], on="run_id")


def matched_level(curves: pd.DataFrame) -> float:
    """The lowest training loss that every run reaches: the largest of the runs' minima."""
    minima = curves.groupby("run_id")["train"].min()
    return float(minima[np.isfinite(minima)].max())


def section(data: PartData) -> Section:
    title = "1. With vs without batch normalization"
    if data.runs.empty or not data.has("none", "batch"):
        return empty(title, "Not run: this part needs the variants 'none' and 'batch'.")
    runs = data.of("none", "batch")
    sec = Section(
        title,
        setup_text(
            data,
            (
                f"An MLP (hidden {hidden_text(runs)}), Adam, {data.budget('none', 'batch')}; the variants "
                "differ only in the norm (and their lr)."
            ),
        ),
    )
    sec.notes += edge_notes(data)

    acc = data.best(*data.runs["variant"].unique())
    sec.findings.append(
        acc_claim(
            "BN makes the network reach a higher test accuracy (each at its own lr).",
            acc,
            "batch",
            "none",
            f"test accuracy at the best held-out epoch (batch {data.lr_of('batch')} vs none {data.lr_of('none')})",
        )
    )
    if data.has("none @ notebook lr", "batch @ notebook lr"):
        sec.findings.append(
            acc_claim(
                "Secondary row, the seed notebook's setting (Adam lr 1e-3 for both): BN reaches a higher "
                "test accuracy.",
                acc,
                "batch @ notebook lr",
                "none @ notebook lr",
                "test accuracy at the best held-out epoch, both at lr 1e-3",
            )
        )

    hold = curve_frame(runs, data.metrics, M.HOLDOUT_ACC_EVAL_MODE)
    if not hold.empty:
        best_hold = data.best("none", "batch", name=M.HOLDOUT_ACC_EVAL_MODE)
        target = 0.95 * float(best_hold.groupby("variant")["value"].mean().min())
        steps = steps_to(hold, target)
        sec.findings.append(
            Finding(
                f"BN converges faster: fewer steps until the held-out accuracy reaches {target:.1%} "
                "(95% of the weaker variant's mean best; evaluated once per epoch).",
                verdict(
                    values(steps, variant="batch"),
                    values(steps, variant="none"),
                    higher_is_better=False,
                    min_effect=float(runs["steps"].max()) / int(runs["epochs"].iloc[0]),  # one epoch
                    what="optimizer steps to the target",
                ),
            )
        )
        if steps["censored"].any():
            sec.notes.append(
                f"{int(steps['censored'].sum())} run(s) never reached the target; they "
                "count at their last step (a lower bound)."
            )

    _regularization(data, sec)

    table = selection_table(data)
    if table is not None:
        sec.table = table
        sec.measured.append(
            "Table: stage 1, mean best held-out accuracy (%) of the selection seeds "
            "per variant and lr; the selected lr; whether it sits at the grid's edge."
        )
    for note in (usable_range(data), plateau_note(data, ["none", "batch"])):
        if note:
            sec.measured.append(note)

    order = [
        v
        for v in (
            "none",
            "batch",
            "ghost batch 16",
            "none @ notebook lr",
            "batch @ notebook lr",
            "none + weight decay",
            "batch + weight decay",
        )
        if data.has(v)
    ]
    sec.figures.append(
        FigureSpec(
            "bn_final_acc",
            plots.plot_final_accuracy(
                acc,
                order=order,
                title="Each variant at its lr",
                ylabel=BEST_ACC_LABEL,
                budget=f"at {data.steps('none', 'batch')}",
            ),
            f"Test accuracy at each run's best held-out epoch ({data.budget('none', 'batch')}): "
            "mean, 95% CI and one dot per seed; each variant at its own lr unless it says otherwise.",
        )
    )
    if not hold.empty:
        sec.figures.append(
            FigureSpec(
                "bn_holdout_acc",
                plots.plot_curves(
                    hold,
                    title="Held-out accuracy",
                    ylabel="held-out accuracy",
                    budget="batch size 64, each at its own lr",
                ),
                f"Held-out accuracy over optimizer steps ({data.budget('none', 'batch')}): mean over seeds "
                "with the 95% CI band.",
            )
        )
    return sec


def _regularization(data: PartData, sec: Section) -> None:
    pairs = [("BN regularizes: a smaller generalization gap than without BN", "batch", "none")]
    if data.has("ghost batch 16"):
        claim = (
            "More batch noise regularizes more: ghost batches of 16 have a smaller generalization "
            "gap than BN over the whole batch of 64"
        )
        pairs.append((claim, "ghost batch 16", "batch"))
    for claim, variant, baseline in pairs:
        curves = loss_curves(data, [variant, baseline])
        if curves.empty:
            continue
        level = matched_level(curves)
        gap = gap_at_matched_loss(curves, level)
        sec.findings.append(
            Finding(
                f"{claim}, at a matched training loss of {level:.3f} nats.",
                verdict(
                    values(gap, variant=variant),
                    values(gap, variant=baseline),
                    higher_is_better=False,
                    min_effect=LOSS_MIN_EFFECT,
                    what=f"test loss - training loss at training loss {level:.3f} (nats)",
                ),
            )
        )
        test = data.best(variant, baseline, name=M.TEST_LOSS).set_index("run_id")["value"]
        train = data.best(variant, baseline, name=M.EPOCH_TRAIN_LOSS)
        train["value"] = train["run_id"].map(test) - train["value"]
        sec.findings.append(
            Finding(
                f"{claim}, at each run's best held-out epoch.",
                verdict(
                    values(train, variant=variant),
                    values(train, variant=baseline),
                    higher_is_better=False,
                    min_effect=LOSS_MIN_EFFECT,
                    what="test loss - training loss at the best held-out epoch (nats)",
                ),
            )
        )
    if data.has("none + weight decay", "batch + weight decay"):
        acc = data.best("none", "batch", "none + weight decay", "batch + weight decay")
        sec.findings.append(
            Finding(
                "BN reduces the need for weight decay: weight decay (5e-4, at each network's selected lr) "
                "improves the network without BN more than the one with BN.",
                verdict(
                    seed_change(acc, "none", "none + weight decay"),
                    seed_change(acc, "batch", "batch + weight decay"),
                    min_effect=ACC_MIN_EFFECT,
                    what="accuracy gained from weight decay, none vs batch",
                    **PCT,
                ),
            )
        )
