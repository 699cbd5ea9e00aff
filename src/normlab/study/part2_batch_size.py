"""Part 2: batch size at equal epochs and at equal steps; BN's small-batch limitation.

Each (norm, batch size, budget) is a variant with its own lr. Claims: BN's accuracy gain at
batch sizes 16, 64, 256 (equal epochs: 10; equal steps: 500); BN loses more than no norm when
the batch shrinks from 64 to 4 at equal steps (an interaction, so a drop every network shows is
not blamed on BN); at batch size 4 the batch-independent norms (group, layer) and Batch Renorm
beat BN.
"""

from __future__ import annotations

import pandas as pd

from normlab.analysis import plots
from normlab.analysis.render import FigureSpec, Section
from normlab.analysis.stats import SUPPORTED, aggregate
from normlab.study.common import (
    BEST_ACC_LABEL,
    Literature,
    PartData,
    acc_claim,
    edge_notes,
    empty,
    hidden_text,
    interaction_claim,
    selection_table,
    setup_text,
)

KEY = "batch_size"
FILE = "batch_size.yaml"
QUICK = {
    "keep": ["none bs 64", "batch bs 64", "none bs 4", "batch bs 4", "group bs 4"],
    "set": {"epochs": 1, "max_steps": 40},
}

LITERATURE = [
    Literature(
        "BN improves test accuracy at batch size",
        "Ioffe & Szegedy (2015) and Wu & He (2018): at ordinary batch sizes BN is ahead of no normalization.",
        SUPPORTED,
    ),
    Literature(
        "BN degrades at small batches",
        "Wu & He (2018): ImageNet ResNet-50 error rises from 23.6% at 32 images per GPU to 34.7% at 2 with BN.",
        SUPPORTED,
    ),
    Literature(
        "group norm avoids",
        "Wu & He (2018): GroupNorm stays near 24.1% at every batch size on a conv net (ImageNet "
        "ResNet-50); theirs is a claim about conv nets, which part 10 tests on the 1-D CNN, not about "
        "an MLP like this one.",
        SUPPORTED,
    ),
    Literature(
        "layer norm avoids",
        "Wu & He (2018): LayerNorm is batch-independent but below BN and GN on "
        "conv nets; on an MLP it is a common small-batch choice.",
        None,
    ),
    Literature(
        "batch_renorm norm avoids", "Ioffe (2017): Batch Renorm recovers much of BN's small-batch loss.", SUPPORTED
    ),
]

EPOCHS = "10 epochs"
STEPS = "500 steps"


def _budget_rows(acc: pd.DataFrame, budget: str) -> pd.DataFrame:
    """The runs of one budget: batch size 64 (10 epochs = 500 steps) belongs to both."""
    keep = acc["variant"].str.endswith(budget) | acc["variant"].str.endswith("bs 64")
    return acc[keep & ~acc["variant"].str.contains("bs 4$")]


def section(data: PartData) -> Section:
    title = "2. Batch size and BN's small-batch limitation"
    if data.runs.empty:
        return empty(title)
    budgets = "; ".join(f"{v}: {data.budget(v)}" for v in data.runs["variant"].unique() if v.startswith("batch bs"))
    sec = Section(
        title,
        setup_text(
            data,
            (
                f"An MLP (hidden {hidden_text(data.runs)}), Adam. Batch sizes 16, 64, 256 at equal epochs and at "
                "equal steps; batch size 4 with no norm, BN, GroupNorm (25 groups), LayerNorm and Batch Renorm. "
                f"Budgets as run: {budgets}."
            ),
        ),
    )
    sec.notes += edge_notes(data)
    acc = data.best(*data.runs["variant"].unique())

    for size, budget in ((16, EPOCHS), (16, STEPS), (64, ""), (256, EPOCHS), (256, STEPS)):
        suffix = f", {budget}" if budget else ""
        b, n = f"batch bs {size}{suffix}", f"none bs {size}{suffix}"
        if data.has(b, n):
            said = f"equal {budget.split()[1]}, " if budget else ""
            sec.findings.append(
                acc_claim(
                    f"BN improves test accuracy at batch size {size} ({said}{data.budget(b)}).",
                    acc,
                    b,
                    n,
                    f"test accuracy, batch size {size}",
                )
            )

    if data.has("none bs 64", "batch bs 64", "none bs 4", "batch bs 4"):
        sec.findings.append(
            interaction_claim(
                f"BN degrades at small batches: going from batch size 64 to 4 ({data.budget('batch bs 64', 'batch bs 4')}) "
                "costs BN more accuracy than it costs the network without normalization.",
                acc,
                ("batch bs 64", "batch bs 4"),
                ("none bs 64", "none bs 4"),
                "accuracy change 64 -> 4, batch vs none",
            )
        )
    for alt in ("group", "layer", "batch_renorm"):
        if data.has(f"{alt} bs 4", "batch bs 4"):
            sec.findings.append(
                acc_claim(
                    f"At batch size 4, {alt} norm avoids BN's small-batch problem (beats BN).",
                    acc,
                    f"{alt} bs 4",
                    "batch bs 4",
                    f"test accuracy at batch size 4, {alt} vs batch",
                )
            )

    table = aggregate(acc.assign(pct=100 * acc["value"]), "variant", "pct")
    table["lr"] = table["variant"].map(lambda v: data.lr_of(v).removeprefix("lr "))
    sec.table = table[["variant", "n", "mean", "ci_low", "ci_high", "lr"]].rename(
        columns={"mean": "test acc %", "ci_low": "95% CI low", "ci_high": "95% CI high"}
    )
    sec.measured.append("Table: test accuracy (%) at the best held-out epoch per variant, and its selected lr.")
    sel = selection_table(data)
    if sel is not None:
        sec.measured.append(
            "Stage 1 (held-out accuracy % per lr): "
            + "; ".join(
                f"{r['variant']}: selected {r['selected lr']}{' (at the edge)' if r['at edge'] else ''}"
                for _, r in sel.iterrows()
            )
        )

    for budget, name in ((EPOCHS, "batch_size_equal_epochs"), (STEPS, "batch_size_equal_steps")):
        rows = _budget_rows(acc, budget)
        if rows["value"].notna().any():
            rows = rows.assign(norm=rows["norm"], batch_size=rows["batch_size"])
            sec.figures.append(
                FigureSpec(
                    name,
                    plots.plot_batch_size(
                        rows,
                        title="Test accuracy vs batch size",
                        budget=f"equal {budget.split()[1]}",
                        ylabel=BEST_ACC_LABEL,
                    ),
                    f"Test accuracy at the best held-out epoch vs batch size, each variant at its own lr; "
                    f"equal {budget.split()[1]}: "
                    + "; ".join(data.budget(v) for v in sorted(set(rows["variant"])) if v.startswith("batch"))
                    + ".",
                )
            )
    small = acc[acc["variant"].str.endswith("bs 4")]
    if small["value"].notna().any():
        order = [v for v in ("none bs 4", "batch bs 4", "group bs 4", "layer bs 4", "batch_renorm bs 4") if data.has(v)]
        sec.figures.append(
            FigureSpec(
                "small_batch_acc",
                plots.plot_final_accuracy(
                    small,
                    order=order,
                    title="Batch size 4",
                    ylabel=BEST_ACC_LABEL,
                    budget=f"at {data.steps('batch bs 4')}",
                ),
                f"Test accuracy at batch size 4 ({data.budget('batch bs 4')}), each norm at its own lr: mean, "
                "95% CI, seeds.",
            )
        )
    return sec
