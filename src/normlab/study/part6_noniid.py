"""Part 6: non-i.i.d. training batches (Ioffe 2017), each variant at its own lr.

Claims: class-grouped batches hurt BN more than they hurt the network without normalization
(the BN x batching interaction, per seed), for batches of 2 classes and of 8 classes x 4
examples; using batch statistics at test time (train mode, i.i.d. held-out batches) recovers
accuracy the running statistics lose; recalibrate_bn does too; Batch Renorm beats BN on
grouped batches.
"""

from __future__ import annotations

from normlab.analysis import plots
from normlab.analysis.frames import final_frame
from normlab.analysis.render import FigureSpec, Section
from normlab.analysis.stats import SUPPORTED
from normlab.study.common import (
    BEST_ACC_LABEL,
    Literature,
    PartData,
    acc_claim,
    edge_notes,
    empty,
    interaction_claim,
    paired_claim,
    recalibration_change,
    selection_table,
    setup_text,
)
from normlab.train import metrics as M

KEY = "noniid"
FILE = "noniid.yaml"
QUICK = {"keep": ["none, iid", "batch, iid", "none, 2 classes", "batch, 2 classes"], "set": {"epochs": 1}}

GROUPINGS = ("2 classes", "8 classes")

LITERATURE = [
    Literature(
        "hurt BN at inference more",
        "Ioffe (2017), Sec. 4.3: with minibatches of few examples from many classes BN's test accuracy "
        "(population statistics) falls well below i.i.d. training.",
        SUPPORTED,
    ),
    Literature(
        "batch statistics at test time",
        "Ioffe (2017): using the minibatch statistics at inference recovers that accuracy.",
        SUPPORTED,
    ),
    Literature(
        "recalibrate_bn",
        "Statistics re-estimated on i.i.d. data match inference conditions (Wu & Johnson 2021, PreciseBN).",
        SUPPORTED,
    ),
    Literature("Batch Renorm recovers", "Ioffe (2017): Batch Renorm recovers most of the non-i.i.d. loss.", SUPPORTED),
]


def section(data: PartData) -> Section:
    title = "6. Non-i.i.d. batches (Ioffe 2017)"
    if data.runs.empty:
        return empty(title)
    sec = Section(
        title,
        setup_text(
            data,
            (
                "Training batches of 32 drawn i.i.d., from 2 classes (16 examples each) or from 8 classes (4 "
                f"examples each); test accuracy in eval mode (running statistics); {data.budget('batch, iid')}."
            ),
        ),
    )
    sec.notes += edge_notes(data)
    acc = data.best(*data.runs["variant"].unique())
    for grouping in GROUPINGS:
        if data.has(f"batch, {grouping}", "batch, iid", f"none, {grouping}", "none, iid"):
            sec.findings.append(
                interaction_claim(
                    f"Non-i.i.d. batches ({grouping}) hurt BN at inference more than they hurt the network "
                    "without normalization.",
                    acc,
                    ("batch, iid", f"batch, {grouping}"),
                    ("none, iid", f"none, {grouping}"),
                    f"accuracy change i.i.d. -> {grouping}, batch vs none",
                )
            )
    for grouping in GROUPINGS:
        label = f"batch, {grouping}"
        if not data.has(label):
            continue
        runs = data.of(label)
        train_mode = final_frame(runs, data.metrics, M.HOLDOUT_ACC_TRAIN_MODE).set_index("run_id")["value"]
        eval_mode = final_frame(runs, data.metrics, M.HOLDOUT_ACC_EVAL_MODE).set_index("run_id")["value"]
        sec.findings.append(
            paired_claim(
                f"With non-i.i.d. training batches ({grouping}), batch statistics at test time (train mode, on "
                "i.i.d. held-out batches) recover accuracy that the running statistics lose.",
                (train_mode - eval_mode).dropna().to_numpy(),
                "held-out accuracy, train mode minus eval mode",
            )
        )
        change = recalibration_change(data, label)
        if change.size:
            sec.findings.append(
                paired_claim(
                    f"recalibrate_bn on i.i.d. training batches improves eval-mode test accuracy of BN trained "
                    f"on non-i.i.d. batches ({grouping}).",
                    change,
                    "test accuracy after minus before recalibration",
                )
            )
        if data.has(f"batch_renorm, {grouping}"):
            sec.findings.append(
                acc_claim(
                    f"Batch Renorm recovers from non-i.i.d. batches ({grouping}): it beats BN on them.",
                    acc,
                    f"batch_renorm, {grouping}",
                    label,
                    f"test accuracy, batch_renorm vs batch ({grouping})",
                )
            )
    sel = selection_table(data)
    if sel is not None:
        sec.table = sel
        sec.measured.append("Table: stage 1, mean best held-out accuracy (%) per lr and the selected lr.")
    order = [f"{n}, {b}" for b in ("iid",) + GROUPINGS for n in ("none", "batch", "batch_renorm")]
    sec.figures.append(
        FigureSpec(
            "noniid_acc",
            plots.plot_final_accuracy(
                acc,
                order=[v for v in order if data.has(v)],
                ylabel=BEST_ACC_LABEL,
                budget=f"at {data.steps('batch, iid')}",
                title="Non-i.i.d. batches",
            ),
            f"Eval-mode test accuracy at the best held-out epoch per norm and batching ({data.budget('batch, iid')}, "
            "each at its own lr): mean, 95% CI, seeds.",
        )
    )
    return sec
