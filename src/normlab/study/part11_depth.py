"""Part 11 (full tier): depth. MLPs of 2-16 hidden layers with and without BN, each at its own lr.

Claims and how each is measured:
  - BN's benefit grows with depth: BN minus no-norm test accuracy at the deepest network minus
    the same at the shallowest, per seed (a difference of differences, as part 2 tests small
    batches), so a drop every network shows with depth is not credited to BN;
  - gradients at initialization (the first step's gradient, part 3's depth sweep), per run
    r = log10(|grad W_first| / |grad W_last|) over the hidden Linear weights of the deepest
    network: without BN r < 0 (vanishing toward the input); BN's r is higher than no-norm's;
    with BN r > 0 (Yang et al. 2019: BN's gradients explode toward the input at init);
  - after training starts: BN's |r| at step ~300 (its own lr) against its |r| at init, paired by
    seed (the same seed gives the same initial weights and first batch whatever the lr);
  - initialization scale (every Linear weight x0.5, 1, 2, 5) at one depth: per seed, the accuracy
    change from x1 to the network's worst scale (picked on the stage-1 selection runs, so not on
    the evaluation seeds' noise), BN against no-norm.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from normlab.analysis import plots
from normlab.analysis.render import FigureSpec, Finding, Section
from normlab.analysis.stats import SUPPORTED, aggregate, paired_verdict, verdict
from normlab.study.common import (
    BEST_ACC_LABEL,
    Literature,
    PartData,
    edge_notes,
    empty,
    interaction_claim,
    plateau_note,
    selected_lrs_text,
    setup_text,
)
from normlab.study.part3_lr_init import layer_grad_frame
from normlab.study.protocol import Selection
from normlab.train import metrics as M

KEY = "depth"
FILE = "depth.yaml"
TIER = "full"
QUICK = {
    "keep": [
        "none, depth 2",
        "batch, depth 2",
        "none, depth 8",
        "batch, depth 8",
        "none, depth 8, at init",
        "batch, depth 8, at init",
    ],
    "set": {"epochs": 2},
    "set_fixed": {"max_steps": 1},
}
"""`--quick`: depths 2 and 8 (2 epochs: depth 2 is then part 1's quick runs, so 14 runs are new)
and the depth-8 gradient at init (one step); the init-scale claim is left to the full study (its
section code is tested on hand-made numbers)."""

LATER_STEP = 300
"""'After a few hundred steps': the probed step (every 100) read for the gradients in training."""
LOG_RATIO_MIN_EFFECT = 0.1
"""log10 gradient-norm ratio: a factor of 1.26, the smallest change we call an effect."""
LATE_GAIN = 0.01
"""A variant whose best held-out accuracy still rose this much (1 point) in the last third of
training is listed as not converged."""
RATIO_WHAT = "log10(first / last hidden layer's gradient norm)"

LITERATURE = [
    Literature(
        "BN's benefit grows with depth",
        "Ioffe & Szegedy (2015) present BN as what makes deep networks trainable, which predicts a gain "
        "growing with depth; Santurkar et al. (2018) trace the gain to a smoother loss landscape rather "
        "than to covariate shift; Yang et al. (2019) and Balduzzi et al. (2017) warn that plain deep "
        "networks (no skip connections) stay hard to train, with BN's gradients exploding and every "
        "feedforward net's gradients shattering with depth, at depths beyond this sweep's 16.",
        SUPPORTED,
    ),
    Literature(
        "Without BN the gradient vanishes",
        "Glorot & Bengio (2010), He et al. (2015): without normalization a gradient's size changes "
        "geometrically with depth unless the initialization preserves variance (He's 2/fan_in for ReLU); "
        "PyTorch's default Linear init (variance 1/(3 fan_in)) is below it, so gradients should shrink "
        "toward the input.",
        SUPPORTED,
    ),
    Literature(
        "BN prevents vanishing gradients",
        "Ioffe & Szegedy (2015, Sec. 3.3): BN makes back-propagation through a layer independent of the "
        "scale of its weights, which should keep gradients from vanishing.",
        SUPPORTED,
    ),
    Literature(
        "grows toward the input at initialization",
        "Yang et al. (2019): at initialization the gradients of plain BN networks explode exponentially "
        "toward the input whatever the initialization or nonlinearity (for ReLU, wide and large-batch "
        "limit: x pi/(pi-1) ~ 1.47 per layer in squared norm); BN itself is the cause.",
        SUPPORTED,
    ),
    Literature(
        "dynamic range",
        "Yang et al. (2019): after a single optimization step BN networks reach an equilibrium in which "
        "the gradients have a dramatically smaller dynamic range than at initialization.",
        SUPPORTED,
    ),
    Literature(
        "less sensitive to the initialization scale",
        "Ioffe & Szegedy (2015, Sec. 3.3): BN(aWu) = BN(Wu), so a layer's output does not depend on its "
        "weights' scale; only the last layer (no BN after it) still sees the scale.",
        SUPPORTED,
    ),
]

_LABEL = re.compile(r"^(?P<norm>\w+), depth (?P<depth>\d+)(?:, init x(?P<scale>[\d.]+))?(?P<init>, at init)?$")


def label(norm: str, depth: int, scale: float = 1.0, at_init: bool = False) -> str:
    """The file's label: "batch, depth 8", "none, depth 8, init x0.5", "batch, depth 16, at init"."""
    return f"{norm}, depth {depth}" + ("" if scale == 1.0 else f", init x{scale:g}") + (", at init" if at_init else "")


def parse_label(text: str) -> dict | None:
    """ "none, depth 8, init x0.5" -> {norm: none, depth: 8, scale: 0.5, at_init: False}; None if
    the label is not one of this part's."""
    found = _LABEL.match(str(text))
    if found is None:
        return None
    return {
        "norm": found["norm"],
        "depth": int(found["depth"]),
        "scale": float(found["scale"] or 1.0),
        "at_init": bool(found["init"]),
    }


def variants_of(data: PartData) -> pd.DataFrame:
    """One row per variant label present: label, norm, depth, scale, at_init."""
    rows = [{"label": v, **parsed} for v in data.runs["variant"].unique() if (parsed := parse_label(v))]
    return pd.DataFrame(rows, columns=["label", "norm", "depth", "scale", "at_init"])


def with_meta(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (with a `variant` column) plus norm, depth, scale, at_init parsed from it."""
    meta = frame["variant"].map(parse_label)
    return frame.assign(**{k: meta.map(lambda m, k=k: m[k]) for k in ("norm", "depth", "scale", "at_init")})


def log_ratios(grads: pd.DataFrame, step: int) -> pd.DataFrame:
    """Per run at `step`: value = log10(gradient norm of the first hidden Linear weight / that of
    the last), from layer_grad_frame rows (layer 0 = the input side). A run without a positive
    finite norm at both ends has no row."""
    at = grads[grads["step"] == step]
    rows = []
    for run_id, run in at.groupby("run_id"):
        first = run.loc[run["layer"] == run["layer"].min(), "value"].to_numpy(dtype=float)
        last = run.loc[run["layer"] == run["layer"].max(), "value"].to_numpy(dtype=float)
        if run["layer"].nunique() < 2 or not (first[0] > 0 and last[0] > 0 and np.isfinite(first[0] / last[0])):
            continue
        rows.append(
            {
                "run_id": run_id,
                "variant": run["variant"].iloc[0],
                "seed": run["seed"].iloc[0],
                "value": float(np.log10(first[0] / last[0])),
            }
        )
    return pd.DataFrame(rows, columns=["run_id", "variant", "seed", "value"])


def per_layer_growth(log_ratio: float, depth: int) -> float:
    """The growth of the squared gradient norm per layer, from r = log10(first / last) over the
    depth - 1 steps between the first and the last hidden layer: 10 ** (2 r / (depth - 1))."""
    return float(10 ** (2 * log_ratio / (depth - 1)))


def later_step(grads: pd.DataFrame, target: int = LATER_STEP) -> int | None:
    """The probed step after the first nearest to `target` (ties: the earlier); None if none."""
    steps = sorted(s for s in grads["step"].unique() if s > 1)
    return int(min(steps, key=lambda s: (abs(s - target), s))) if steps else None


def worst_scale(selection: dict[str, Selection], norm: str, depth: int, scales) -> float | None:
    """The init scale other than x1 at which `norm`'s network did worst in stage 1 (mean held-out
    accuracy of the selection seeds at its selected lr): chosen on data the evaluation runs do
    not share, so the drop measured on them is not inflated by picking the worst of noisy values.
    None when no scale has a selection."""
    scores = {}
    for scale in scales:
        chosen = selection.get(label(norm, depth, scale))
        if scale != 1.0 and chosen is not None and chosen.lr is not None:
            scores[scale] = float(chosen.grid.loc[np.isclose(chosen.grid["lr"], chosen.lr), "score"].iloc[0])
    return min(scores, key=lambda s: (scores[s], s)) if scores else None


def _log2_x(figure, values, xlabel: str) -> None:
    """Put the figure's x axis on a log2 scale with a tick at each value (depths, init scales)."""
    ax = figure.axes[0]
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"{xlabel} (log2 axis)")
    ax.set_xticks(sorted(values), [f"{v:g}" for v in sorted(values)])


def _accuracy(sec: Section, data: PartData, kinds: pd.DataFrame) -> None:
    """BN's benefit vs depth (init x1): the interaction claim, a table and a figure."""
    tuned = kinds[~kinds["at_init"] & (kinds["scale"] == 1.0)]
    both = sorted(set(tuned.loc[tuned["norm"] == "none", "depth"]) & set(tuned.loc[tuned["norm"] == "batch", "depth"]))
    if not both:
        return
    acc = with_meta(data.best(*tuned["label"]))
    lo, hi = both[0], both[-1]
    if lo != hi:
        sec.findings.append(
            interaction_claim(
                f"BN's benefit grows with depth: BN minus no-norm test accuracy is larger at {hi} hidden layers "
                f"than at {lo} ({data.budget(label('batch', hi))}, each at its own lr).",
                acc,
                (label("batch", lo), label("batch", hi)),
                (label("none", lo), label("none", hi)),
                f"BN's gain at depth {hi} minus its gain at depth {lo}",
                hurts=False,
            )
        )
    means = acc.groupby(["depth", "norm"])["value"].mean().unstack("norm")
    gains = [
        f"depth {d}: {100 * (means.loc[d, 'batch'] - means.loc[d, 'none']):+.2f}"
        for d in both
        if {"batch", "none"} <= set(means.columns)
    ]
    sec.measured.append("BN's gain (mean test accuracy, BN minus no-norm, points) per depth: " + "; ".join(gains) + ".")
    table = aggregate(acc.assign(pct=100 * acc["value"]), ["depth", "norm"], "pct")
    table["lr"] = [data.lr_of(label(n, d)).removeprefix("lr ") for d, n in zip(table["depth"], table["norm"])]
    sec.table = table[["depth", "norm", "n", "mean", "ci_low", "ci_high", "lr"]].rename(
        columns={"mean": "test acc %", "ci_low": "95% CI low", "ci_high": "95% CI high"}
    )
    sec.measured.append("Table: test accuracy (%) at the best held-out epoch per depth and norm, and the selected lr.")
    figure = plots.plot_curves(acc, x="depth", group="norm", title="Accuracy vs depth", ylabel=BEST_ACC_LABEL)
    _log2_x(figure, both, "hidden layers")
    sec.figures.append(
        FigureSpec(
            "depth_accuracy",
            figure,
            f"Test accuracy at the best held-out epoch vs the number of hidden layers (100 units each; log2 axis), "
            f"mean over seeds and 95% CI, each depth and norm at its own lr ({data.budget(label('batch', lo))}).",
        )
    )


def _gradients(sec: Section, data: PartData, kinds: pd.DataFrame) -> None:
    """Per-layer gradient norms at init (the 'at init' runs) and in training (the tuned runs)."""
    at_init = kinds[kinds["at_init"]]
    init_grads = with_meta(layer_grad_frame(data.of(*at_init["label"]), data.metrics))
    if init_grads.empty:
        return
    init = with_meta(log_ratios(init_grads, step=1))
    deepest = int(init["depth"].max())
    none0 = init[(init["norm"] == "none") & (init["depth"] == deepest)]["value"]
    bn0 = init[(init["norm"] == "batch") & (init["depth"] == deepest)]["value"]
    where = f"in an MLP with {deepest} hidden layers"
    if len(none0):
        sec.findings.append(
            Finding(
                f"Without BN the gradient vanishes toward the input at initialization {where}: the first hidden "
                "layer's weight gradient is smaller than the last hidden layer's.",
                paired_verdict(
                    none0,
                    higher_is_better=False,
                    min_effect=LOG_RATIO_MIN_EFFECT,
                    what=f"{RATIO_WHAT}, no norm, per run",
                ),
            )
        )
    if len(none0) and len(bn0):
        sec.findings.append(
            Finding(
                f"BN prevents vanishing gradients at initialization {where}: the first hidden layer's gradient, "
                "relative to the last hidden layer's, is larger with BN than without.",
                verdict(bn0, none0, min_effect=LOG_RATIO_MIN_EFFECT, what=f"{RATIO_WHAT}, batch vs none"),
            )
        )
    if len(bn0):
        sec.findings.append(
            Finding(
                f"With BN the gradient grows toward the input at initialization {where} (Yang et al. 2019: "
                "gradient explosion): the first hidden layer's gradient norm is larger than the last's.",
                paired_verdict(bn0, min_effect=LOG_RATIO_MIN_EFFECT, what=f"{RATIO_WHAT}, batch, per run"),
            )
        )
    per_depth = init.groupby(["depth", "norm"])["value"].mean().unstack("norm")
    sec.measured.append(
        f"Mean {RATIO_WHAT} at initialization (step 1), per depth: "
        + "; ".join(
            f"depth {d}: " + ", ".join(f"{n} {per_depth.loc[d, n]:+.2f}" for n in per_depth.columns)
            for d in per_depth.index
        )
        + " (0 = even; +1 = the input side's gradient 10x the last layer's)."
    )
    if len(bn0):
        sec.measured.append(
            f"With BN at depth {deepest} the squared gradient norm grows x{per_layer_growth(bn0.mean(), deepest):.2f} "
            f"per layer toward the input (Yang et al.'s ReLU rate, wide and large-batch limit: pi/(pi-1) = "
            f"{np.pi / (np.pi - 1):.2f}; here batch size {_batch_sizes(data)})."
        )
    figure = plots.plot_curves(
        init, x="depth", group="norm", title="Gradient ratio at initialization vs depth", ylabel=RATIO_WHAT
    )
    _log2_x(figure, init["depth"].unique(), "hidden layers")
    sec.figures.append(
        FigureSpec(
            "depth_grad_ratio_init",
            figure,
            f"{RATIO_WHAT} at the first step (the gradient at initialization) vs depth, mean over seeds and 95% CI; "
            "below 0 the gradient vanishes toward the input, above 0 it grows (Adam 1e-3, batch size 64).",
        )
    )

    tuned = kinds[~kinds["at_init"] & (kinds["scale"] == 1.0) & (kinds["depth"] == deepest)]
    train_grads = with_meta(layer_grad_frame(data.of(*tuned["label"]), data.metrics))
    step = later_step(train_grads) if len(train_grads) else None
    layers = init_grads[(init_grads["depth"] == deepest) & (init_grads["step"] == 1)].assign(
        when=lambda f: f["norm"] + ", at init"
    )
    if step is not None:
        later = with_meta(log_ratios(train_grads, step))
        pairs = init[(init["norm"] == "batch") & (init["depth"] == deepest)].set_index("seed")["value"].abs()
        now = later[later["norm"] == "batch"].set_index("seed")["value"].abs()
        change = (now - pairs).dropna()
        if len(change):
            sec.findings.append(
                Finding(
                    f"With BN the gradients' dynamic range across layers shrinks once training starts {where} "
                    f"(Yang et al. 2019): |{RATIO_WHAT}| is smaller at step {step} (BN's own lr) than at "
                    "initialization, per seed.",
                    paired_verdict(
                        change.to_numpy(),
                        higher_is_better=False,
                        min_effect=LOG_RATIO_MIN_EFFECT,
                        what=f"|{RATIO_WHAT}| at step {step} minus at init, batch",
                    ),
                )
            )
        means = later.groupby("norm")["value"].mean()
        sec.measured.append(
            f"Mean {RATIO_WHAT} at step {step} {where}, each at its own lr: "
            + ", ".join(f"{n} {v:+.2f}" for n, v in means.items())
            + "."
        )
        layers = pd.concat(
            [layers, train_grads[train_grads["step"] == step].assign(when=lambda f: f["norm"] + f", step {step}")],
            ignore_index=True,
        )
    figure = plots.plot_curves(
        layers,
        x="layer",
        group="when",
        logy=True,
        title=f"Gradient norm per hidden layer, depth {deepest}",
        ylabel="gradient norm of the layer's weight",
    )
    sec.figures.append(
        FigureSpec(
            "depth_grad_layers",
            figure,
            f"Gradient norm of each hidden Linear weight of the MLP with {deepest} hidden layers (x: layer index, input side "
            "first; log scale), mean over seeds and 95% CI: at initialization"
            + (f" and at step {step} of the runs at each norm's own lr" if step is not None else "")
            + ".",
        )
    )


def _init_scale(sec: Section, data: PartData, kinds: pd.DataFrame) -> None:
    """Accuracy vs initialization scale at one depth, BN against no-norm."""
    scaled = kinds[~kinds["at_init"] & (kinds["scale"] != 1.0)]
    if scaled.empty:
        return
    depth = int(scaled["depth"].iloc[0])
    labels = kinds[~kinds["at_init"] & (kinds["depth"] == depth)]["label"]
    acc = with_meta(data.best(*labels))
    scales = sorted(acc["scale"].unique())
    worst = {n: worst_scale(data.selection, n, depth, scales) for n in ("batch", "none")}
    if None not in worst.values() and {label(n, depth) for n in worst} <= set(labels):
        sec.findings.append(
            interaction_claim(
                f"BN makes an MLP with {depth} hidden layers less sensitive to the initialization scale: going from "
                f"init x1 to its worst scale (BN x{worst['batch']:g}, no norm x{worst['none']:g} of "
                f"x{', x'.join(f'{s:g}' for s in scales)}, the worst chosen on the selection runs) costs BN less "
                "accuracy than it costs the network without BN (each at its own lr).",
                acc,
                (label("batch", depth), label("batch", depth, worst["batch"])),
                (label("none", depth), label("none", depth, worst["none"])),
                "accuracy change from init x1 to the worst scale, batch vs none",
                hurts=False,
            )
        )
    elif len(scales) > 1:
        sec.notes.append(
            "The initialization-scale claim needs stage 1's selection runs (they pick each "
            "network's worst scale); none are stored for this part."
        )
    means = acc.groupby(["norm", "scale"])["value"].mean()
    sec.measured.append(
        f"Mean test accuracy (%) at depth {depth} per init scale: "
        + "; ".join(
            f"{n}: " + ", ".join(f"x{s:g} {100 * means.loc[(n, s)]:.1f}" for s in scales if (n, s) in means.index)
            for n in sorted(acc["norm"].unique())
        )
        + "."
    )
    figure = plots.plot_curves(
        acc, x="scale", group="norm", title=f"Accuracy vs initialization scale, depth {depth}", ylabel=BEST_ACC_LABEL
    )
    _log2_x(figure, scales, "initial weight scale")
    sec.figures.append(
        FigureSpec(
            "depth_init_scale",
            figure,
            f"Test accuracy at the best held-out epoch vs the factor every initial Linear weight was multiplied by "
            f"(log2 axis), {depth} hidden layers, mean over seeds and 95% CI, each scale and norm at its own lr.",
        )
    )


def _batch_sizes(data: PartData) -> str:
    sizes = sorted({int(b) for b in data.runs["batch_size"].dropna()}) if "batch_size" in data.runs else []
    return " or ".join(map(str, sizes)) if sizes else "as run"


def late_gains(data: PartData, labels) -> dict[str, float]:
    """Per variant: the mean over its runs of the best held-out accuracy of the last third of its
    evaluations minus the best of the first two thirds (`plateau_note`'s budget check, per variant)."""
    hold = data.metrics[data.metrics["name"] == M.HOLDOUT_ACC_EVAL_MODE]
    out = {}
    for name in labels:
        gains = []
        for _, run in hold[hold["run_id"].isin(data.of(name)["run_id"])].groupby("run_id"):
            v = run.sort_values("step")["value"].to_numpy(dtype=float)
            if v.size >= 3:
                gains.append(np.nanmax(v) - np.nanmax(v[: max(1, (2 * v.size) // 3)]))
        if gains:
            out[name] = float(np.mean(gains))
    return out


def _and(items) -> str:
    """[2, 4, 8] -> "2, 4 and 8"."""
    words = [str(x) for x in items]
    return " and ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else "".join(words)


def _probe_period(data: PartData, kinds: pd.DataFrame) -> str:
    """ "every 100 steps": how often the tuned runs recorded their gradient norms, as they ran."""
    probed = data.of(*kinds.loc[~kinds["at_init"], "label"])
    if "probes.grad_norms" not in probed or "probes.every_steps" not in probed:
        return "at the probed steps"
    periods = sorted({int(p) for p in probed.loc[probed["probes.grad_norms"].astype(bool), "probes.every_steps"]})
    return f"every {' or '.join(map(str, periods))} steps" if periods else "at the probed steps"


def section(data: PartData) -> Section:
    title = "11. Depth: BN's benefit, gradient flow and the initialization scale"
    if data.runs.empty:
        return empty(title)
    kinds = variants_of(data)
    depths = sorted(set(kinds["depth"]))
    sec = Section(
        title,
        setup_text(
            data,
            (
                f"MLPs of {_and(depths)} hidden layers of 100 units (MNIST-1D, Adam, batch size 64), with "
                "and without BN. Gradient norms are those of each hidden Linear weight: at initialization from the first "
                "step of part 3's depth sweep (the same seed gives the same initial weights and first batch whatever the "
                f"lr), during training {_probe_period(data, kinds)} of the runs at each variant's own lr. With Adam a "
                "layer's step does not shrink with its gradient, so a vanishing gradient need not stall it as it would "
                "with SGD."
            ),
        ),
    )
    sec.notes += edge_notes(data)
    _accuracy(sec, data, kinds)
    _gradients(sec, data, kinds)
    _init_scale(sec, data, kinds)
    tuned = list(kinds.loc[~kinds["at_init"], "label"])
    note = plateau_note(data, tuned)
    if note:
        sec.notes.append(note)
    rising = {k: v for k, v in late_gains(data, tuned).items() if v >= LATE_GAIN}
    if rising:
        sec.notes.append(
            f"Still rising (best held-out accuracy gained >= {100 * LATE_GAIN:.0f} point in the last "
            "third of training): "
            + "; ".join(f"{k} +{100 * v:.1f}" for k, v in sorted(rising.items(), key=lambda kv: -kv[1]))
            + "."
        )
    if (selected := selected_lrs_text(data)) is not None:
        sec.measured.append(selected)
    return sec
