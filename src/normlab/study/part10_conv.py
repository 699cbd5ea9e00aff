"""Part 10: normalization in a convolutional network, from batch size 2 to 128.

The MNIST-1D paper's 1-D CNN with no norm, BN, GroupNorm, LayerNorm, InstanceNorm and Batch
Renorm; every batch size at the same number of optimizer steps, each (norm, batch size) cell at
its own lr. Claims:

  - GroupNorm's small-batch advantage (Wu & He 2018): GN beats BN at batch size 2, and BN loses
    more than GN when the batch shrinks from 128 to 2 (an interaction: a drop every norm shows
    is not blamed on BN);
  - BN beats no norm at batch size 128; BN against GN, LN and IN at 128, and LN, IN and Batch
    Renorm against BN at 2;
  - BN's train/inference mismatch (held-out accuracy in eval mode minus train mode, signed) at
    batch sizes 2 and 128, and whether it is larger at 2;
  - `recalibrate_bn` after training: eval-mode test accuracy after minus before, at 2 and 128;
  - `fold_batchnorm` is exact: the folded copy's eval-mode logits and accuracy against the
    model's (a check computed from the stored numbers, not a statistical claim: an exact
    operation has no spread to test).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from normlab.analysis.frames import final_frame
from normlab.analysis.palette import variant_color
from normlab.analysis.render import FigureSpec, Finding, Section
from normlab.analysis.stats import SUPPORTED, aggregate, verdict
from normlab.study.common import (
    ACC_MIN_EFFECT,
    BEST_ACC_LABEL,
    PCT,
    Literature,
    PartData,
    acc_claim,
    edge_notes,
    empty,
    interaction_claim,
    paired_claim,
    recalibration_change,
    setup_text,
)
from normlab.study.recalibrate import FOLD_ACC_CHANGE, FOLD_LEFT, FOLD_LOGIT_ERROR, FOLD_LOGIT_SCALE
from normlab.train import metrics as M

KEY = "conv"
FILE = "conv.yaml"
TIER = "full"
QUICK = {
    "keep": ["none bs 128", "batch bs 2", "group bs 2", "batch bs 128", "group bs 128"],
    "set": {"epochs": 1, "max_steps": 10},
}

NORMS = ("none", "batch", "group", "layer", "instance", "batch_renorm")
SMALL, LARGE = 2, 128  # the batch sizes the claims compare
FOLD_TOLERANCE = 1e-5
"""Largest folded-minus-model logit difference, relative to the largest logit, that we call
exact: float32 rounding (eps 1.2e-7) accumulated over a conv's 25 x 5 products stays far below."""

LITERATURE = [
    Literature(
        "BN improves the CNN's test accuracy",
        "Ioffe & Szegedy (2015): BN lets a conv net train faster and to a higher accuracy. On MNIST-1D "
        "the CNN without normalization reaches ~94% after ~8000 steps (Greydanus 2020); here every run "
        "has 1000.",
        SUPPORTED,
    ),
    Literature(
        "group norm beats BN at batch size 2",
        "Wu & He (2018), Fig. 1 and Table 2 (ResNet-50, ImageNet): BN's error rises from 23.6% at 32 "
        "images per GPU to 34.7% at 2, GroupNorm stays at 24.0-24.2%. Their batch sizes share an epoch "
        "budget with the lr scaled to the batch; here the steps are equal and each cell has its own lr.",
        SUPPORTED,
    ),
    Literature(
        "BN loses more accuracy than group norm",
        "Wu & He (2018), Table 2: BN minus GN error goes from -0.5 points at 32 images per GPU (BN "
        "better) to +10.6 at 2.",
        SUPPORTED,
    ),
    Literature(
        "BN beats group norm at batch size 128",
        "Wu & He (2018), Table 1: at 32 images per GPU BN is ahead of GroupNorm by 0.5 points (23.6% vs "
        "24.1% error), a smaller gap than this study's smallest effect.",
        SUPPORTED,
    ),
    Literature(
        "layer norm beats BN at batch size 2",
        "Wu & He (2018), Table 1: LayerNorm does not depend on the batch (25.3% error at any batch size), "
        "so it is ahead of BN's 34.7% at 2 images per GPU.",
        SUPPORTED,
    ),
    Literature(
        "instance norm beats BN at batch size 2",
        "Wu & He (2018), Table 1: InstanceNorm does not depend on the batch (28.4% error), so it is "
        "ahead of BN's 34.7% at 2 images per GPU.",
        SUPPORTED,
    ),
    Literature(
        "batch_renorm norm beats BN at batch size 2",
        "Ioffe (2017), Sec. 4.3: with 4 examples per minibatch, Batch Renorm trains Inception-v3 to a "
        "clearly higher ImageNet accuracy than BN (still below BN at the usual minibatch size).",
        SUPPORTED,
    ),
    Literature(
        "BN beats layer norm at batch size 128",
        "Ba et al. (2016), Sec. 6.7: on conv nets LayerNorm speeds training over no normalization but BN "
        "outperforms it; Wu & He (2018), Table 1: 25.3% vs BN's 23.6% error.",
        SUPPORTED,
    ),
    Literature(
        "BN beats instance norm at batch size 128",
        "Ulyanov et al. (2016) made InstanceNorm for stylization, where removing each image's contrast "
        "helps; for classification Wu & He (2018), Table 1, find 28.4% error vs BN's 23.6%.",
        SUPPORTED,
    ),
    Literature(
        "inference on the CNN (batch size 2)",
        "Ioffe (2017): with small minibatches the batch statistics BN trains with differ from the "
        "population statistics it infers with, so the model changes at inference.",
        SUPPORTED,
    ),
    Literature(
        "inference on the CNN (batch size 128)",
        "Ioffe & Szegedy (2015) use population statistics at inference; at ordinary batch sizes the mismatch is small.",
        None,
    ),
    Literature(
        "loses more accuracy against train mode at batch size 2 than at 128",
        "Ioffe (2017): the mismatch grows as minibatches shrink.",
        SUPPORTED,
    ),
    Literature(
        "recalibrate_bn improves the CNN's eval-mode test accuracy (BN trained at batch size 2)",
        "Wu & Johnson (2021), PreciseBN: running averages over small, noisy batches are poor population "
        "estimates; re-estimating them on large batches after training recovers accuracy.",
        SUPPORTED,
    ),
    Literature(
        "recalibrate_bn improves the CNN's eval-mode test accuracy (BN trained at batch size 128)",
        "Wu & Johnson (2021): at ordinary batch sizes PreciseBN changes accuracy by a few tenths of a point at most.",
        None,
    ),
]


def cell(norm: str, size: int) -> str:
    """The variant label of one (norm, batch size) cell: "group bs 2"."""
    return f"{norm} bs {size}"


def cell_table(acc: pd.DataFrame, data: PartData) -> pd.DataFrame:
    """One row per (norm, batch size) cell: n, mean, 95% CI (%), and the cell's lr."""
    table = aggregate(acc.assign(pct=100 * acc["value"]), ["norm", "batch_size"], "pct")
    table["lr"] = [data.lr_of(cell(n, int(b))).removeprefix("lr ") for n, b in zip(table["norm"], table["batch_size"])]
    table["batch_size"] = table["batch_size"].astype(int)
    order = {n: i for i, n in enumerate(NORMS)}
    table = table.sort_values(["norm", "batch_size"], key=lambda c: c.map(order) if c.name == "norm" else c)
    return table.reset_index(drop=True)


def conv_figure(table: pd.DataFrame, budget: str, grid: list[float]) -> Figure:
    """Left: test accuracy vs batch size per norm (dot = mean over seeds, bar = 95% CI, dodged
    sideways per norm); right: each cell's selected lr vs batch size (log-log), on the lr grid."""
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    norms = [n for n in NORMS if n in set(table["norm"])]
    for i, norm in enumerate(norms):
        rows = table[table["norm"] == norm].sort_values("batch_size")
        dodge = 2.0 ** (0.06 * (i - (len(norms) - 1) / 2))  # multiplicative: the x axis is log2
        x = rows["batch_size"].to_numpy(dtype=float) * dodge
        mean = rows["mean"].to_numpy(dtype=float)
        err = np.vstack([mean - rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float) - mean])
        color = variant_color(norm)
        left.errorbar(x, mean, yerr=np.nan_to_num(err), fmt="o", ms=4, capsize=2, color=color, label=norm)
        lrs = pd.to_numeric(rows["lr"], errors="coerce").to_numpy(dtype=float)
        right.plot(x, lrs, "o-", ms=4, color=color, label=norm)
    sizes = sorted(int(s) for s in table["batch_size"].unique())
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("batch size (log2)")
    left.set_ylabel(f"{BEST_ACC_LABEL} (%), {budget}")
    left.legend(fontsize=8)
    right.set_yscale("log")
    if grid:  # the grid's lrs as ticks: a cell at the top or bottom one is at the grid's edge
        right.set_yticks(grid, [f"{x:.0e}" for x in grid])
        right.set_ylim(min(grid) / 1.5, max(grid) * 1.5)
        right.minorticks_off()
    right.set_ylabel("selected lr (Adam, held-out data)")
    left.set_title("Test accuracy per cell: mean and 95% CI over seeds")
    right.set_title("Each cell's own learning rate")
    fig.tight_layout()
    return fig


def fold_summary(data: PartData, labels: list[str]) -> tuple[str, bool] | None:
    """The fold_batchnorm check on every measured run of `labels`: (sentence, passed); None
    when no run of `labels` was measured."""
    rows = []
    for label in labels:
        runs = data.of(label)
        frames = {
            name: final_frame(runs, data.metrics, name).set_index("run_id")["value"]
            for name in (FOLD_ACC_CHANGE, FOLD_LOGIT_ERROR, FOLD_LOGIT_SCALE, FOLD_LEFT)
        }
        rows.append(pd.DataFrame(frames).dropna())
    table = pd.concat(rows) if rows else pd.DataFrame()
    if table.empty:
        return None
    relative = float((table[FOLD_LOGIT_ERROR] / table[FOLD_LOGIT_SCALE].clip(lower=1e-12)).max())
    changed = int((table[FOLD_ACC_CHANGE] != 0).sum())
    left = int(table[FOLD_LEFT].sum())
    exact = changed == 0 and left == 0 and relative <= FOLD_TOLERANCE
    verdict_text = (
        f"exact within float32 rounding (bound {FOLD_TOLERANCE:.0e} relative): check passed"
        if exact
        else f"NOT exact (bound {FOLD_TOLERANCE:.0e} relative, every BN folded, no accuracy change): check failed"
    )
    return (
        f"fold_batchnorm on {len(table)} trained BN CNNs ({', '.join(labels)}), eval mode, test split: "
        f"{left} BN layers left unfolded; the folded copy's test accuracy differs from the model's in "
        f"{changed} of {len(table)} runs (largest change {100 * float(table[FOLD_ACC_CHANGE].abs().max()):.2f} "
        f"points); largest logit difference {float(table[FOLD_LOGIT_ERROR].max()):.1e} against logits up to "
        f"{float(table[FOLD_LOGIT_SCALE].max()):.3g} ({relative:.1e} relative): {verdict_text}.",
        exact,
    )


def _gap(data: PartData, label: str) -> pd.Series:
    """Per run of `label`: held-out accuracy in eval mode minus train mode, at the end."""
    runs = data.of(label)
    train_mode = final_frame(runs, data.metrics, M.HOLDOUT_ACC_TRAIN_MODE).set_index("run_id")["value"]
    eval_mode = final_frame(runs, data.metrics, M.HOLDOUT_ACC_EVAL_MODE).set_index("run_id")["value"]
    return (eval_mode - train_mode).dropna()


def _accuracy_claims(sec: Section, data: PartData, acc: pd.DataFrame) -> None:
    small, large = cell("batch", SMALL), cell("batch", LARGE)
    if data.has(large, cell("none", LARGE)):
        sec.findings.append(
            acc_claim(
                f"BN improves the CNN's test accuracy at batch size {LARGE} ({data.budget(large)}).",
                acc,
                large,
                cell("none", LARGE),
                f"test accuracy at batch size {LARGE}, batch vs none",
            )
        )
    if data.has(small, cell("group", SMALL)):
        sec.findings.append(
            acc_claim(
                f"On the CNN, group norm beats BN at batch size {SMALL} ({data.budget(small)}).",
                acc,
                cell("group", SMALL),
                small,
                f"test accuracy at batch size {SMALL}, group vs batch",
            )
        )
    if data.has(small, large, cell("group", SMALL), cell("group", LARGE)):
        sec.findings.append(
            interaction_claim(
                f"On the CNN, BN loses more accuracy than group norm when the batch shrinks from {LARGE} to {SMALL} "
                "(BN's deficit against GroupNorm grows at small batches).",
                acc,
                (large, small),
                (cell("group", LARGE), cell("group", SMALL)),
                f"accuracy change {LARGE} -> {SMALL}, batch vs group",
            )
        )
    for alt in ("group", "layer", "instance"):
        if data.has(large, cell(alt, LARGE)):
            sec.findings.append(
                acc_claim(
                    f"On the CNN, BN beats {alt} norm at batch size {LARGE}.",
                    acc,
                    large,
                    cell(alt, LARGE),
                    f"test accuracy at batch size {LARGE}, batch vs {alt}",
                )
            )
    for alt in ("layer", "instance", "batch_renorm"):
        if data.has(small, cell(alt, SMALL)):
            sec.findings.append(
                acc_claim(
                    f"On the CNN, {alt} norm beats BN at batch size {SMALL}.",
                    acc,
                    cell(alt, SMALL),
                    small,
                    f"test accuracy at batch size {SMALL}, {alt} vs batch",
                )
            )


def _inference_claims(sec: Section, data: PartData) -> None:
    gaps = {}
    for size in (SMALL, LARGE):
        label = cell("batch", size)
        if not data.has(label):
            continue
        gaps[size] = _gap(data, label)
        sec.findings.append(
            paired_claim(
                f"BN behaves differently at inference on the CNN (batch size {size}): eval mode loses accuracy "
                "against train mode on the same held-out data.",
                gaps[size].to_numpy(),
                f"held-out accuracy, eval mode minus train mode (BN, batch size {size})",
                higher_is_better=False,
            )
        )
        change = recalibration_change(data, label)
        if change.size:
            sec.findings.append(
                paired_claim(
                    f"recalibrate_bn improves the CNN's eval-mode test accuracy (BN trained at batch size {size}): "
                    "running statistics re-estimated on i.i.d. training batches of 256 after training.",
                    change,
                    "test accuracy after minus before recalibration",
                )
            )
    if len(gaps) == 2:
        sec.findings.append(
            Finding(
                f"On the CNN, BN's eval mode loses more accuracy against train mode at batch size {SMALL} than at "
                f"{LARGE}.",
                verdict(
                    gaps[SMALL].to_numpy(),
                    gaps[LARGE].to_numpy(),
                    higher_is_better=False,
                    min_effect=ACC_MIN_EFFECT,
                    what=f"eval minus train mode held-out accuracy, batch size {SMALL} vs {LARGE}",
                    **PCT,
                ),
            )
        )


def section(data: PartData) -> Section:
    title = "10. Convolutional networks: BN, GroupNorm, LayerNorm, InstanceNorm, Batch Renorm"
    if data.runs.empty:
        return empty(title)
    labels = list(data.runs["variant"].unique())
    runs = data.runs.drop_duplicates("variant")
    cells = "; ".join(
        f"{norm} at {', '.join(str(int(b)) for b in sorted(rows['batch_size']))}"
        for norm, rows in sorted(
            runs.groupby("norm"), key=lambda kv: NORMS.index(kv[0]) if kv[0] in NORMS else len(NORMS)
        )
    )
    sec = Section(
        title,
        setup_text(
            data,
            (
                "The MNIST-1D paper's 1-D CNN (three conv layers of 25 channels, kernels 5/3/3, stride 2, ReLU; "
                "a norm after each conv; GroupNorm with 5 groups of 5 channels), Adam. Cells (norm at batch sizes): "
                f"{cells}. Budgets as run (the design gives every batch size the same optimizer steps): "
                f"{data.budget(*labels)}."
            ),
        ),
    )
    sec.notes += edge_notes(data)
    acc = data.best(*labels)
    _accuracy_claims(sec, data, acc)
    _inference_claims(sec, data)

    if acc["value"].notna().any():
        table = cell_table(acc.dropna(subset=["value"]), data)
        sec.table = table[["norm", "batch_size", "n", "mean", "ci_low", "ci_high", "lr"]].rename(
            columns={"batch_size": "batch size", "mean": "test acc %", "ci_low": "95% CI low", "ci_high": "95% CI high"}
        )
        sec.measured.append(
            "Table: test accuracy (%) at the best held-out epoch per (norm, batch size) cell, "
            "and the cell's selected lr."
        )
        budget = data.steps(*labels)
        sec.figures.append(
            FigureSpec(
                "conv_batch_size",
                conv_figure(
                    table,
                    f"at {budget}" if budget else "",
                    sorted({float(lr) for sel in data.selection.values() for lr in sel.grid["lr"]}),
                ),
                "Left: test accuracy at the best held-out epoch per norm and batch size, each cell at its own lr "
                "(mean over seeds, 95% CI); right: the lr each cell selected on held-out data. Every batch size "
                f"ran {budget or 'the same steps'}.",
            )
        )
    fold = fold_summary(data, [v for v in (cell("batch", SMALL), cell("batch", LARGE)) if data.has(v)])
    if fold is not None:
        sec.measured.append(fold[0])
        if not fold[1]:
            sec.notes.append(
                "fold_batchnorm did not reproduce the model's eval-mode outputs: see the measured line above."
            )
    return sec
