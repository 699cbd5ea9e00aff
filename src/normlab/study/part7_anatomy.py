"""Part 7: what BN does, shown on a trained network; the role of gamma and beta.

- the BN computation on the first hidden layer of a trained BN run (stored by
  `normlab.study.mechanisms`): its pre- and post-BN activations, gamma and beta per channel,
  and the identity "gamma = sqrt(var + eps), beta = mean recovers the input", checked in float64;
- gamma and beta matter: BN with vs without them (affine=False), each at its own lr;
- BN-only training (Frankle et al. 2021) vs as many random parameters (the run config's
  `trainable`), each at its own lr.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from normlab.analysis.palette import variant_color
from normlab.analysis.render import FigureSpec, Section
from normlab.analysis.stats import SUPPORTED
from normlab.study.common import (
    BEST_ACC_LABEL,
    Literature,
    PartData,
    acc_claim,
    edge_notes,
    empty,
    selection_table,
    setup_text,
)

KEY = "anatomy"
FILE = "anatomy.yaml"
QUICK = {"set": {"epochs": 2}}

AFFINE_OFF = "batch, affine off"
BN_ONLY, RANDOM_MATCHED = "batch, bn only", "batch, random matched"

LITERATURE = [
    Literature(
        "than BN without them",
        "Ioffe & Szegedy (2015), Sec. 3, add gamma and beta so that BN can represent the identity "
        "transform; they report no ablation without them.",
        None,
    ),
    Literature(
        "Training only BN's gamma and beta",
        "Frankle et al. (2021): with every other weight frozen at its random init, training only BN's "
        "parameters reaches far higher accuracy than training as many randomly chosen parameters "
        "(e.g. ResNet-110 on CIFAR-10).",
        SUPPORTED,
    ),
]

BN_TEXT = (
    "Batch norm in training mode, per channel c over the batch (and positions): mean mu_c, biased "
    "variance sigma_c^2, x_hat = (x - mu_c) / sqrt(sigma_c^2 + eps), y = gamma_c x_hat + beta_c; the running "
    "mean and (unbiased) variance move toward the batch's by the momentum and replace the batch statistics "
    "in eval mode. Choosing gamma_c = sqrt(sigma_c^2 + eps) and beta_c = mu_c gives y = x back."
)


def _last(metrics: pd.DataFrame, run_id: str, prefix: str) -> dict[str, float]:
    """The run's metrics starting with `prefix`, at their last step: {suffix: value}."""
    rows = metrics[(metrics["run_id"] == run_id) & metrics["name"].str.startswith(prefix)]
    rows = rows.sort_values("step").groupby("name")["value"].last()
    return {name[len(prefix) :]: float(v) for name, v in rows.items()}


def _indexed(values: dict[str, float]) -> np.ndarray:
    """{"0": a, "1": b, ...} -> array([a, b, ...]) in index order."""
    return np.array([values[k] for k in sorted(values, key=int)], dtype=float)


def anatomy_figure(stored: dict[str, float], title: str) -> Figure:
    """Left: histograms of the pre- and post-BN activations; right: gamma and beta per channel."""
    fig = Figure(figsize=(10, 3.8))
    left, right = fig.subplots(1, 2)
    lo, hi = stored["hist_lo"], stored["hist_hi"]
    pre = _indexed({k.split("/")[1]: v for k, v in stored.items() if k.startswith("pre_hist/")})
    post = _indexed({k.split("/")[1]: v for k, v in stored.items() if k.startswith("post_hist/")})
    edges = np.linspace(lo, hi, len(pre) + 1)
    for counts, label, color in (
        (pre, "pre-BN (Linear output)", variant_color("none")),
        (post, "post-BN (gamma x_hat + beta)", variant_color("batch")),
    ):
        left.stairs(counts, edges, label=label, color=color, fill=True, alpha=0.45)
    left.set_xlabel("activation")
    left.set_ylabel("count")
    left.legend(fontsize=8)
    gamma = _indexed({k.split("/")[1]: v for k, v in stored.items() if k.startswith("gamma/")})
    beta = _indexed({k.split("/")[1]: v for k, v in stored.items() if k.startswith("beta/")})
    channels = np.arange(len(gamma))
    right.plot(channels, gamma, "o", ms=3, label="gamma (init 1)", color=variant_color("batch"))
    right.plot(channels, beta, "s", ms=3, label="beta (init 0)", color=variant_color("layer"))
    right.axhline(1.0, color="0.6", lw=0.8, ls="--")
    right.axhline(0.0, color="0.6", lw=0.8, ls=":")
    right.set_xlabel("channel")
    right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def section(data: PartData) -> Section:
    title = "7. What BN does: the computation on a trained layer; gamma and beta"
    if data.runs.empty or not data.has("batch"):
        return empty(title)
    sec = Section(
        title,
        setup_text(
            data,
            BN_TEXT + f" Shown on the first hidden layer (blocks.0.norm) of a trained BN run, {data.budget('batch')}.",
        ),
    )
    sec.notes += edge_notes(data)
    bn_runs = data.of("batch").drop_duplicates("run_id").sort_values("seed")
    shown = None
    for r in bn_runs.itertuples():
        stored = _last(data.metrics, r.run_id, "anatomy/")
        if "identity_error" in stored:
            shown = (r, stored)
            break
    if shown is None:
        sec.notes.append(
            "The layer was not measured (run normlab.study.mechanisms.measure_mechanisms on the finished runs)."
        )
    else:
        r, stored = shown
        sec.measured.append(
            f"Identity check on seed {int(r.seed)}'s trained layer: BN with gamma = sqrt(var + eps) and beta = "
            f"mean returns its input to within {stored['identity_error']:.1e} (max |error|, float64; the input's "
            f"largest magnitude is {stored['input_scale']:.3g})."
        )
        sec.figures.append(
            FigureSpec(
                "anatomy_layer",
                anatomy_figure(stored, f"blocks.0.norm of a trained BN MLP (seed {int(r.seed)})"),
                "Left: one batch's activations before BN (the Linear output) and after it; right: the learned "
                "gamma and beta of each channel, at the end of training.",
            )
        )
    if data.has("batch", AFFINE_OFF):
        sec.findings.append(
            acc_claim(
                "BN with a learned gamma and beta reaches a higher test accuracy than BN without them "
                "(affine=False), each at its own lr.",
                data.best("batch", AFFINE_OFF),
                "batch",
                AFFINE_OFF,
                BEST_ACC_LABEL,
            )
        )
    if data.has(BN_ONLY, RANDOM_MATCHED):
        sec.findings.append(
            acc_claim(
                "Training only BN's gamma and beta (every other weight frozen at init) reaches a higher test "
                "accuracy than training as many randomly chosen other parameters (Frankle et al. 2021).",
                data.best(BN_ONLY, RANDOM_MATCHED),
                BN_ONLY,
                RANDOM_MATCHED,
                BEST_ACC_LABEL,
            )
        )
    else:
        sec.notes.append(
            "BN-only training vs a matched random subset was not run (no finished runs of "
            f"the variants {BN_ONLY!r} and {RANDOM_MATCHED!r})."
        )
    sel = selection_table(data)
    if sel is not None:
        sec.table = sel
        sec.measured.append("Table: stage 1, mean best held-out accuracy (%) per lr and the selected lr.")
    return sec
