"""Part 4: what BN costs per step, and whether it behaves the same in training and inference.

- time per optimizer step per norm (median over a run's logging windows after the first);
- train/inference: on the held-out slice, eval-mode (running statistics) minus train-mode
  (batch statistics) accuracy of BN, signed: the claim is a *drop* at inference. A network
  without BN has no such difference (exactly 0), so BN's is tested against zero, paired;
- `recalibrate_bn` (running statistics re-estimated on i.i.d. training batches after
  training): eval-mode test accuracy after minus before, on the same final model.
"""

from __future__ import annotations

import pandas as pd

from normlab.analysis import plots
from normlab.analysis.frames import final_frame
from normlab.analysis.render import FigureSpec, Finding, Section
from normlab.analysis.stats import SUPPORTED, aggregate, verdict
from normlab.study.common import (
    Literature,
    PartData,
    edge_notes,
    empty,
    paired_claim,
    recalibration_change,
    setup_text,
    values,
)
from normlab.study.timing import PAIRED_STEP_MS
from normlab.train import metrics as M

KEY = "costs"
FILE = "costs.yaml"
QUICK = {
    "keep": ["none", "batch", "none, timing", "batch, timing"],
    "set": {"epochs": 2},
    "set_fixed": {"max_steps": 40},
}

STEP_MS_MIN_EFFECT = 0.02  # ms per step: below this no one would notice

LITERATURE = [
    Literature(
        "BN costs extra computation",
        "BN adds a reduction over the batch per layer forward and backward; its cost relative to the "
        "matrix products is largest for small layers like these.",
        SUPPORTED,
    ),
    Literature(
        "BN behaves differently at inference (batch size 4)",
        "Ioffe (2017): the mismatch between batch and population statistics grows as batches shrink.",
        SUPPORTED,
    ),
    Literature(
        "BN behaves differently at inference",
        "Ioffe & Szegedy (2015) use population statistics at inference; at ordinary batch sizes the mismatch is small.",
        None,
    ),
    Literature(
        "recalibrate_bn",
        "Wu & Johnson (2021), PreciseBN: re-estimating the statistics after training removes the part "
        "of the mismatch due to stale running averages, most at small batches.",
        SUPPORTED,
    ),
]


def section(data: PartData) -> Section:
    title = "4. Costs and train/inference consistency"
    if data.runs.empty:
        return empty(title)
    sec = Section(
        title,
        setup_text(
            data,
            (
                "Time per optimizer step (forward, loss, backward, update on one batch of 128; each seed's "
                "timing runs rebuilt after training and timed side by side in one process, round-robin, "
                "one thread; median over 80 steps); held-out accuracy in eval mode "
                "(running statistics) and train mode (statistics of held-out batches of the training batch size)."
            ),
        ),
    )
    sec.notes += edge_notes(data)

    timing = data.of(*[v for v in data.runs["variant"].unique() if v.endswith(", timing")])
    if not timing.empty:
        # timed side by side after the sweeps (study.timing): the runs' own step_ms windows
        # also measure whichever run shared the CPU with them
        ms = final_frame(timing, data.metrics, PAIRED_STEP_MS)
        ms = ms.assign(variant=ms["variant"].str.removesuffix(", timing"))
        if ms["value"].notna().any():
            b, n = values(ms, variant="batch"), values(ms, variant="none")
            # the claim is that BN's step takes *longer*: the claimed direction is up
            sec.findings.append(
                Finding(
                    "BN costs extra computation (a slower training step).",
                    verdict(
                        b,
                        n,
                        higher_is_better=True,
                        min_effect=STEP_MS_MIN_EFFECT,
                        what="time per step (ms), batch vs none",
                    ),
                )
            )
            table = aggregate(ms, "variant", "value").rename(columns={"mean": "ms/step"})
            sec.table = table[["variant", "n", "ms/step", "ci_low", "ci_high"]]
            sec.measured.append(
                "Table: time per step (ms) per norm, timed side by side; wall time, so compare within this run."
            )
            sec.figures.append(
                FigureSpec(
                    "step_time",
                    plots.plot_step_time(ms, title="Time per step", budget="at batch 128 (80 timed steps)"),
                    "Median wall time per optimizer step per norm, the norms timed side by side: mean over "
                    "seeds, 95% CI, seeds.",
                )
            )

    for label, size in (("batch bs 4", 4), ("batch", 64)):
        if not data.has(label):
            continue
        runs = data.of(label)
        train_mode = final_frame(runs, data.metrics, M.HOLDOUT_ACC_TRAIN_MODE).set_index("run_id")["value"]
        eval_mode = final_frame(runs, data.metrics, M.HOLDOUT_ACC_EVAL_MODE).set_index("run_id")["value"]
        diff = (eval_mode - train_mode).dropna()
        sec.findings.append(
            paired_claim(
                f"BN behaves differently at inference (batch size {size}): eval mode loses accuracy against "
                "train mode on the same held-out data.",
                diff.to_numpy(),
                f"held-out accuracy, eval mode minus train mode (BN, batch size {size})",
                higher_is_better=False,
            )
        )
        change = recalibration_change(data, label)
        if change.size:
            sec.findings.append(
                paired_claim(
                    f"recalibrate_bn (running statistics re-estimated on i.i.d. training batches after training) "
                    f"improves eval-mode test accuracy (BN trained at batch size {size}).",
                    change,
                    "test accuracy after minus before recalibration",
                )
            )
    signed = []
    for label in ("batch bs 4", "batch", "none bs 4", "none"):
        if data.has(label):
            runs = data.of(label)
            gap = final_frame(runs, data.metrics, M.TRAIN_EVAL_GAP)
            signed.append(gap.assign(value=-gap["value"]))
    if signed:
        frame = pd.concat(signed, ignore_index=True)
        if frame["value"].notna().any():
            sec.figures.append(
                FigureSpec(
                    "eval_minus_train_mode",
                    plots.plot_final_accuracy(
                        frame,
                        title="Eval-mode minus train-mode held-out accuracy",
                        ylabel="accuracy difference",
                        order=[v for v in ("none", "batch", "none bs 4", "batch bs 4") if data.has(v)],
                    ),
                    "Held-out accuracy in eval mode minus train mode at the end of training (negative: inference "
                    f"loses accuracy); {data.budget('batch', 'batch bs 4')}, each at its own lr.",
                )
            )
    return sec
