"""The six sections of the study report, one function per part, each (runs, metrics) -> Section.

Each function states the seed notebook's claims, measures them on the runs of its part (the
frames of `Store.runs_frame` / `Store.metrics_frame`) and gives each claim a verdict computed
by `normlab.analysis.stats.verdict`. No sentence of a verdict is written by hand: every number
in it comes from the store. A part with no usable runs (e.g. skipped by `--quick`) returns a
section that says so.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from normlab.analysis import plots
from normlab.analysis.frames import curve_frame, final_frame
from normlab.analysis.render import FigureSpec, Finding, Section
from normlab.analysis.stats import aggregate, paired_verdict, steps_to_target, verdict
from normlab.train import metrics as M

__all__ = [
    "section_with_without",
    "section_batch_size",
    "section_lr_init",
    "section_costs",
    "section_ioffe2015",
    "section_noniid",
    "RECAL_TEST_ACC",
]

RECAL_TEST_ACC = "recal_test_acc"
"""Test accuracy (eval mode) after `normlab.layers.recalibrate_bn` on i.i.d. training batches;
written into the store by the study (experiments/study.py) for its BN runs."""

PCT = dict(scale=100.0, unit="%")  # accuracies are fractions; the text shows percent
ACC_MIN_EFFECT = 0.005  # half an accuracy point: the smallest accuracy change we call an effect


def _dedupe(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run (a run listed in two groups of a part appears twice in runs_frame)."""
    return frame.drop_duplicates("run_id")


def _values(frame: pd.DataFrame, **where) -> np.ndarray:
    """The `value` column of the rows matching every column == value given."""
    mask = np.ones(len(frame), dtype=bool)
    for column, wanted in where.items():
        mask &= (frame[column] == wanted).to_numpy()
    return frame.loc[mask, "value"].to_numpy(dtype=float)


def _group(runs: pd.DataFrame, name: str) -> pd.DataFrame:
    """The runs of group `name`, once each; every run when the part has no such group.
    (Pick the group before `_dedupe`: a run in two groups keeps only its first row there.)"""
    return _dedupe(runs[runs["group"] == name] if name in set(runs["group"]) else runs)


def _seed_change(acc: pd.DataFrame, norm: str, column: str, before, after) -> np.ndarray:
    """Per seed, `norm`'s value at column == after minus its value at column == before."""
    rows = acc[acc["norm"] == norm]
    changed = rows[rows[column] == after].set_index("seed")["value"]
    reference = rows[rows[column] == before].set_index("seed")["value"]
    return (changed - reference).dropna().to_numpy()


def _empty(title: str, why: str = "Not run (no runs stored for this part).") -> Section:
    return Section(title=title, setup=why)


def _setup(runs: pd.DataFrame, text: str) -> str:
    n_runs = runs["run_id"].nunique()
    seeds = sorted(int(s) for s in runs["seed"].unique()) if "seed" in runs else []
    statuses = _dedupe(runs)["status"].value_counts().to_dict()
    status = ", ".join(f"{v} {k}" for k, v in sorted(statuses.items()))
    return f"{text} {n_runs} runs ({status}), seeds {seeds}."


def _hidden(runs: pd.DataFrame) -> str:
    """The hidden widths as stored (JSON text), or the model's default."""
    value = runs["hidden"].iloc[0] if "hidden" in runs else None
    return "[512, 256]" if value is None or value == "null" else str(value)  # the MLP's default


def _epochs(runs: pd.DataFrame) -> str:
    values = sorted(int(e) for e in runs["epochs"].unique())
    return f"{values[0]} epoch{'s' * (values[0] != 1)}" if len(values) == 1 else f"{values} epochs"


def _max_steps(runs: pd.DataFrame) -> str:
    capped = runs.dropna(subset=["max_steps"]) if "max_steps" in runs else runs.iloc[:0]
    if capped.empty:
        return "none"
    return ", ".join(f"batch size {int(b)}: {int(m)} steps"
                     for b, m in sorted(set(zip(capped["batch_size"], capped["max_steps"]))))


def _steps_to(curves: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per run: first evaluation step with value >= target; a run that never gets there is
    counted at its last step (a lower bound, so the comparison stays conservative)."""
    rows = []
    for run_id, run in curves.groupby("run_id"):
        hit = steps_to_target(run["step"], run["value"], target)
        censored = math.isnan(hit)
        rows.append({"run_id": run_id, "variant": run["variant"].iloc[0],
                     "value": float(run["step"].max()) if censored else hit, "censored": censored})
    return pd.DataFrame(rows)


# --- part 1 ---------------------------------------------------------------------------------


def _weight_grad_frame(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """grad_norm/<param> rows of Linear weights (norm parameters left out), `layer` column."""
    names = [n for n in metrics["name"].unique()
             if n.startswith("grad_norm/") and n.endswith(".weight") and ".norm." not in n]
    if not names:
        return pd.DataFrame()
    rows = metrics[metrics["name"].isin(names)].copy()
    rows["layer"] = rows["name"].str.removeprefix("grad_norm/").str.removesuffix(".weight")
    return rows.merge(runs[["run_id", "variant", "seed"]], on="run_id")


def _layer_order(layer: str) -> tuple[int, str]:
    """blocks.0.linear < blocks.1.linear < head: by the first number in the name, head last."""
    found = re.search(r"\d+", layer)
    return (int(found.group()) if found else 10**6, layer)


def section_with_without(runs: pd.DataFrame, metrics: pd.DataFrame) -> Section:
    """Part 1: the seed's MLP at batch size 64 with and without BN, several seeds."""
    title = "1. With vs without batch normalization"
    runs = _dedupe(runs)
    if runs.empty or not {"none", "batch"} <= set(runs["norm"]):
        return _empty(title, "Not run: this part needs runs with norm=none and norm=batch.")
    runs = runs.assign(variant=runs["norm"])
    batch = int(runs["batch_size"].iloc[0])
    section = Section(title, _setup(
        runs, f"The seed notebook's MLP (hidden {_hidden(runs)}), {runs['optimizer'].iloc[0]} "
              f"lr {runs['lr'].iloc[0]}, batch size {batch}, {_epochs(runs)}, "
              "identical settings except the norm; every run owns its model and optimizer."))

    acc = final_frame(runs, metrics, M.TEST_ACC)
    section.findings.append(Finding(
        "BN makes the network reach a higher test accuracy.",
        verdict(_values(acc, norm="batch"), _values(acc, norm="none"), min_effect=ACC_MIN_EFFECT,
                what="final test accuracy", **PCT)))

    curves = curve_frame(runs, metrics, M.TEST_ACC)
    if not curves.empty:
        means = acc.groupby("norm")["value"].mean()
        target = 0.95 * float(means.min())
        steps = _steps_to(curves, target)
        section.findings.append(Finding(
            f"BN converges faster (fewer steps to {target:.1%} test accuracy, 95% of the "
            "weaker variant's final mean; test accuracy is measured once per epoch).",
            verdict(_values(steps, variant="batch"), _values(steps, variant="none"),
                    higher_is_better=False, what="steps to target")))
        if steps["censored"].any():
            section.notes.append(f"{int(steps['censored'].sum())} run(s) never reached the target; "
                                 "they count at their last step (a lower bound).")

    test_loss = final_frame(runs, metrics, M.TEST_LOSS).set_index("run_id")["value"]
    train_loss = final_frame(runs, metrics, M.EPOCH_TRAIN_LOSS).set_index("run_id")["value"]
    gap = runs.set_index("run_id")[["norm"]].assign(value=test_loss - train_loss).reset_index()
    section.findings.append(Finding(
        "BN regularizes: a smaller generalization gap (final test loss minus training loss).",
        verdict(_values(gap, norm="batch"), _values(gap, norm="none"), higher_is_better=False,
                what="test - train loss (nats)")))

    grads = _weight_grad_frame(runs, metrics)
    if not grads.empty:
        layers = sorted(grads["layer"].unique(), key=_layer_order)
        first, last = layers[0], layers[-1]
        wide = grads.pivot_table(index=["run_id", "step"], columns="layer", values="value").reset_index()
        wide = wide[(wide[first] > 0) & (wide[last] > 0)]
        wide["value"] = np.abs(np.log10(wide[first] / wide[last]))
        per_run = wide.groupby("run_id")["value"].median().rename("value").reset_index()
        per_run = per_run.merge(runs[["run_id", "norm"]], on="run_id")
        section.findings.append(Finding(
            f"BN improves gradient flow: the gradient norms of the first ({first}) and last "
            f"({last}) layers stay closer (absolute log10 of their ratio, median over training).",
            verdict(_values(per_run, norm="batch"), _values(per_run, norm="none"),
                    higher_is_better=False, what="|log10(first/last grad norm)|")))
        section.figures.append(FigureSpec(
            "bn_grad_norms", plots.plot_grad_norms(grads, title="Gradient norm of each layer's weight",
                                                   order=["none", "batch"]),
            "Gradient norm per layer over training (mean over seeds), without and with BN."))

    if not curves.empty:
        section.figures.append(FigureSpec(
            "bn_test_acc", plots.plot_curves(curves, title="Test accuracy", ylabel="test accuracy"),
            "Test accuracy over training: mean over seeds with the 95% CI band."))
    loss = curve_frame(runs, metrics, M.TRAIN_LOSS)
    if not loss.empty:
        section.figures.append(FigureSpec(
            "bn_train_loss", plots.plot_curves(loss, title="Training loss", ylabel="loss (nats)", logy=True),
            "Training loss over steps: mean over seeds with the 95% CI band."))
    section.figures.append(FigureSpec(
        "bn_final_acc", plots.plot_final_accuracy(acc, order=["none", "batch"], title="Final test accuracy"),
        "Final test accuracy: mean, 95% CI and one dot per seed."))
    return section


# --- part 2 ---------------------------------------------------------------------------------


def section_batch_size(runs: pd.DataFrame, metrics: pd.DataFrame) -> Section:
    """Part 2: batch sizes 32/64/128 with and without BN, small batches with the alternatives."""
    title = "2. Batch size and BN's small-batch limitation"
    runs = _dedupe(runs)
    if runs.empty:
        return _empty(title)
    runs = runs.assign(variant=runs["norm"])
    acc = final_frame(runs, metrics, M.TEST_ACC)
    section = Section(title, _setup(
        runs, f"An MLP (hidden {_hidden(runs)}), {_epochs(runs)} at every batch size unless "
              f"capped by max_steps ({_max_steps(runs)}); batch sizes "
              f"{sorted(int(b) for b in runs['batch_size'].unique())}, norms {sorted(runs['norm'].unique())}."))

    sizes = sorted(acc["batch_size"].unique())
    for size in sizes:
        b, n = _values(acc, norm="batch", batch_size=size), _values(acc, norm="none", batch_size=size)
        if size >= 32 and b.size and n.size:
            section.findings.append(Finding(
                f"BN improves test accuracy at batch size {size}.",
                verdict(b, n, min_effect=ACC_MIN_EFFECT, what=f"test accuracy (batch size {size})", **PCT)))

    # Reference: batch size 16 (the small group's equal-epoch point) when it was run, else 64.
    small = sizes[0]
    ref = next((s for s in (16, 64) if s in sizes and s > small), sizes[-1])
    if small < ref:
        # Per-seed accuracy change from the reference to the smallest batch, BN vs no norm: the
        # interaction, so a drop that every network shows at small batches is not blamed on BN.
        section.findings.append(Finding(
            f"BN degrades at small batches: going from batch size {ref} to {small} costs BN "
            "more accuracy than it costs the network without normalization.",
            verdict(_seed_change(acc, "batch", "batch_size", ref, small),
                    _seed_change(acc, "none", "batch_size", ref, small),
                    higher_is_better=False, min_effect=ACC_MIN_EFFECT,
                    what=f"accuracy change {ref} -> {small}", **PCT)))
        base = _values(acc, norm="batch", batch_size=small)
        for alt in sorted(set(acc.loc[acc["batch_size"] == small, "norm"]) - {"batch", "none"}):
            section.findings.append(Finding(
                f"At batch size {small}, the {alt} norm avoids BN's small-batch problem (beats BN).",
                verdict(_values(acc, norm=alt, batch_size=small), base, min_effect=ACC_MIN_EFFECT,
                        what=f"{alt} vs batch at batch size {small}", **PCT)))

    table = aggregate(acc, ["norm", "batch_size"], "value")
    table = table.pivot(index="norm", columns="batch_size", values="mean").reset_index()
    table.columns = ["norm"] + [f"bs {c}" for c in table.columns[1:]]
    section.table = table
    section.measured.append("Table: mean final test accuracy per norm and batch size.")
    section.figures.append(FigureSpec(
        "batch_size_acc", plots.plot_batch_size(acc, title="Test accuracy vs batch size"),
        "Final test accuracy vs batch size (log2 axis) per norm: mean and 95% CI band over seeds."))
    return section


# --- part 3 ---------------------------------------------------------------------------------


def _lr_curves(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Per run and logging step: the learning rate and the training loss (NaN if diverged)."""
    loss = metrics[metrics["name"] == M.TRAIN_LOSS][["run_id", "step", "value"]].rename(columns={"value": "loss"})
    lr = metrics[metrics["name"] == M.LR][["run_id", "step", "value"]].rename(columns={"value": "lr"})
    both = loss.merge(lr, on=["run_id", "step"]).merge(runs[["run_id", "variant", "seed"]], on="run_id")
    return both.sort_values(["run_id", "step"])


def _lr_stats(curves: pd.DataFrame) -> pd.DataFrame:
    """Per run: log10 of the lr at the lowest (3-point smoothed) loss, and of the largest lr
    before the loss climbs back above its starting value (the end of the usable range)."""
    rows = []
    for run_id, run in curves.groupby("run_id"):
        loss = run["loss"].where(np.isfinite(run["loss"]))
        smooth = loss.rolling(3, min_periods=1, center=True).mean().to_numpy()
        lrs = run["lr"].to_numpy()
        if not np.isfinite(smooth).any():
            continue
        best = int(np.nanargmin(smooth))
        start = smooth[0]
        after = np.nonzero(~(smooth[best:] <= start))[0]  # NaN (diverged) counts as above
        end = best + int(after[0]) - 1 if after.size else len(lrs) - 1
        rows.append({"run_id": run_id, "variant": run["variant"].iloc[0],
                     "best": math.log10(lrs[best]), "max_usable": math.log10(lrs[max(end, best)])})
    return pd.DataFrame(rows, columns=["run_id", "variant", "best", "max_usable"])


def section_lr_init(runs: pd.DataFrame, metrics: pd.DataFrame) -> Section:
    """Part 3: a learning-rate range test and badly scaled initializations, with and without BN."""
    title = "3. Learning rate and initialization sensitivity"
    if runs.empty:
        return _empty(title)
    section = Section(title, _setup(
        _dedupe(runs), "Learning-rate range test: the lr grows exponentially every step "
        "(x gamma per epoch) and the training loss is recorded. Initialization: all weights "
        "multiplied by init_scale, then trained as usual."))
    rng = runs[runs["group"] == "lr_range"]
    if not rng.empty:
        rng = rng.assign(variant=rng["norm"])
        curves = _lr_curves(rng, metrics)
        stats = _lr_stats(curves)
        for column, what in (("best", "the lowest loss"), ("max_usable", "the end of the usable range")):
            b = stats.loc[stats["variant"] == "batch", column].to_numpy()
            n = stats.loc[stats["variant"] == "none", column].to_numpy()
            section.findings.append(Finding(
                f"BN allows higher learning rates ({what} is at a higher lr).",
                verdict(b, n, min_effect=0.0, what=f"log10 lr at {what}")))
        section.figures.append(FigureSpec(
            "lr_range", plots.plot_lr_range(curves, title="Learning-rate range test"),
            "Training loss as the learning rate grows exponentially (mean over seeds); the dot "
            "marks the lowest loss, curves end where the loss diverged."))
    init = _dedupe(runs[runs["group"] == "init"])
    if not init.empty:
        init = init.assign(variant=init["norm"] + ", init x" + init["init_scale"].map("{:g}".format))
        acc = final_frame(init, metrics, M.TEST_ACC)
        for scale in sorted(s for s in acc["init_scale"].unique() if s != 1.0):
            section.findings.append(Finding(
                f"BN makes training less sensitive to a badly scaled initialization (weights x{scale:g}): "
                "it loses less accuracy than the network without BN.",
                verdict(_seed_change(acc, "batch", "init_scale", 1.0, scale),
                        _seed_change(acc, "none", "init_scale", 1.0, scale), min_effect=ACC_MIN_EFFECT,
                        what=f"accuracy change from init x1 to x{scale:g}", **PCT)))
        order = sorted(acc["variant"].unique(), key=lambda v: (v.split(",")[0] != "none", v))
        section.figures.append(FigureSpec(
            "init_final_acc", plots.plot_final_accuracy(acc, order=order, title="Initialization scale"),
            "Final test accuracy per norm and initial weight scale: mean, 95% CI, seeds."))
    return section


# --- part 4 ---------------------------------------------------------------------------------


def section_costs(runs: pd.DataFrame, metrics: pd.DataFrame) -> Section:
    """Part 4: time per step, the train-mode/eval-mode accuracy gap and recalibrate_bn."""
    title = "4. Costs and train/inference consistency"
    if runs.empty:
        return _empty(title)
    section = Section(title, _setup(
        _dedupe(runs), "Time per optimizer step (data, forward, backward, update; median over the run's "
              "logging windows after the first); accuracy on a held-out slice of the training set "
              "in train mode (batch statistics) and eval mode (running statistics)."))
    timing = _group(runs, "overhead")
    timing = timing.assign(variant=timing["norm"])
    step_ms = metrics[metrics["name"] == M.STEP_MS]
    # The first window holds the warm-up (allocations, first kernels): leave it out.
    step_ms = step_ms[step_ms["step"] > step_ms.groupby("run_id")["step"].transform("min")]
    ms = final_frame(timing, step_ms, M.STEP_MS, how="median")
    if ms["value"].notna().any():
        b, n = _values(ms, norm="batch"), _values(ms, norm="none")
        v = verdict(b, n, min_effect=0.0, what="time per step (ms)")
        section.findings.append(Finding("BN costs extra computation (a slower training step).", v))
        if b.size and n.size:
            section.measured.append(
                f"BN's overhead on this machine: {100 * (b.mean() / n.mean() - 1):+.1f}% time per step "
                f"({b.mean():.3f} ms vs {n.mean():.3f} ms).")
        table = aggregate(ms, "norm", "value").rename(columns={"mean": "ms/step"})
        section.table = table[["norm", "n", "ms/step", "ci_low", "ci_high"]]
        section.figures.append(FigureSpec(
            "step_time", plots.plot_step_time(ms, title="Time per step"),
            "Median wall time per optimizer step per norm: mean over seeds, 95% CI, seeds."))

    gap_runs = _group(runs, "gap")
    gap = final_frame(gap_runs, metrics, M.TRAIN_EVAL_GAP)
    gap["value"] = gap["value"].abs()
    for size in sorted(gap["batch_size"].unique()):
        b, n = _values(gap, norm="batch", batch_size=size), _values(gap, norm="none", batch_size=size)
        if b.size and n.size:
            section.findings.append(Finding(
                f"BN behaves differently in training and inference (batch size {size}): a gap "
                "between train-mode and eval-mode accuracy on the same held-out data.",
                verdict(b, n, min_effect=ACC_MIN_EFFECT, what=f"|train-mode - eval-mode accuracy| (batch {size})", **PCT)))
    gap_runs = gap_runs.assign(variant=gap_runs["norm"] + ", bs " + gap_runs["batch_size"].astype(str))
    gap_plot = final_frame(gap_runs, metrics, M.TRAIN_EVAL_GAP)
    if gap_plot["value"].notna().any():
        section.figures.append(FigureSpec(
            "train_eval_gap", plots.plot_final_accuracy(
                gap_plot, title="Train-mode minus eval-mode accuracy", ylabel="accuracy gap"),
            "Held-out accuracy in train mode minus eval mode at the end of training."))

    recal = _recalibration_change(gap_runs, metrics)
    for size in sorted(recal["batch_size"].unique()):
        section.findings.append(_recal_finding(recal[recal["batch_size"] == size], f"trained at batch size {size}"))
    return section


def _recalibration_change(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Per BN run with a `recal_test_acc`: run columns + `value` = accuracy after - before."""
    recal = final_frame(runs, metrics, RECAL_TEST_ACC).dropna(subset=["value"])
    if recal.empty:
        return recal
    plain = final_frame(runs, metrics, M.TEST_ACC).set_index("run_id")["value"].astype(float)
    before = recal["run_id"].map(plain).astype(float)
    return recal.assign(value=recal["value"].astype(float) - before).dropna(subset=["value"])


def _recal_finding(changes: pd.DataFrame, when: str) -> Finding:
    return Finding(
        f"recalibrate_bn (re-estimating BN's running statistics on i.i.d. training batches after "
        f"training) improves eval-mode test accuracy ({when}).",
        paired_verdict(changes["value"], min_effect=ACC_MIN_EFFECT,
                       what="test accuracy after minus before recalibration", **PCT))


# --- part 5 ---------------------------------------------------------------------------------


def _percentile_frame(runs: pd.DataFrame, metrics: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Percentiles of one tracked unit of the last hidden layer: run_id, step, p15, p50, p85."""
    keys = metrics["name"][metrics["name"].str.startswith("act/")].unique()
    parsed = [(k, M.parse_key(k)) for k in keys]
    parsed = [(k, p) for k, p in parsed if p["unit"] is not None]
    if not parsed:
        return pd.DataFrame(), ""
    last = max((p["layer"] for _, p in parsed), key=_layer_order)
    unit = min(p["unit"] for _, p in parsed if p["layer"] == last)
    names = {M.act_unit_key(last, unit, q): f"p{q}" for q in M.PERCENTILES}
    rows = metrics[metrics["name"].isin(names)].assign(stat=lambda f: f["name"].map(names))
    wide = rows.pivot_table(index=["run_id", "step"], columns="stat", values="value").reset_index()
    wide = wide.merge(runs[["run_id", "variant", "seed"]], on="run_id")
    return wide, f"{last}, unit {unit}"


def section_ioffe2015(runs: pd.DataFrame, metrics: pd.DataFrame) -> Section:
    """Part 5: Ioffe & Szegedy (2015) Fig. 1 on a 3x100 sigmoid MLP, with and without BN."""
    title = "5. The original paper's picture (Ioffe & Szegedy 2015, Fig. 1)"
    runs = _dedupe(runs)
    if runs.empty:
        return _empty(title)
    runs = runs.assign(variant=runs["norm"])
    section = Section(title, _setup(
        runs, f"An MLP of hidden {_hidden(runs)} {runs['activation'].iloc[0]} units, {_epochs(runs)}, "
              f"batch size {int(runs['batch_size'].iloc[0])}, with and without BN; the input of one "
              "last-hidden-layer unit is probed during training."))
    acc = final_frame(runs, metrics, M.TEST_ACC)
    section.findings.append(Finding(
        "With BN the sigmoid network trains to a higher test accuracy (Fig. 1a).",
        verdict(_values(acc, norm="batch"), _values(acc, norm="none"), min_effect=ACC_MIN_EFFECT,
                what="final test accuracy", **PCT)))
    pct, unit = _percentile_frame(runs, metrics)
    if not pct.empty:
        # Drift: how far the unit's median input wanders over training, in units of its spread
        # (mean 15th-85th percentile width); internal covariate shift in one number.
        def drift(run: pd.DataFrame) -> float:
            width = float((run["p85"] - run["p15"]).mean())
            return float(run["p50"].max() - run["p50"].min()) / width if width > 0 else float("nan")

        per_run = pct.groupby("run_id").apply(drift, include_groups=False).rename("value").reset_index()
        per_run = per_run.merge(runs[["run_id", "norm"]], on="run_id")
        section.findings.append(Finding(
            f"BN keeps the distribution of a unit's input stable over training ({unit}): its "
            "median moves less, relative to its 15th-85th percentile spread (Fig. 1b vs 1c).",
            verdict(_values(per_run, norm="batch"), _values(per_run, norm="none"),
                    higher_is_better=False, what="median drift / spread")))
        first_seed = pct[pct["seed"] == pct["seed"].min()]
        section.figures.append(FigureSpec(
            "ioffe2015_percentiles",
            plots.plot_percentiles(first_seed, title=f"15th/50th/85th percentile of the input to {unit}",
                                   order=[v for v in ("none", "batch") if v in set(first_seed["variant"])]),
            f"Ioffe & Szegedy Fig. 1b/c: percentiles of one unit's input over training (seed {pct['seed'].min()})."))
    curves = curve_frame(runs, metrics, M.TEST_ACC)
    if not curves.empty:
        section.figures.append(FigureSpec(
            "ioffe2015_test_acc", plots.plot_curves(curves, title="Test accuracy (Fig. 1a)", ylabel="test accuracy"),
            "Test accuracy over training steps, mean over seeds with the 95% CI band."))
    return section


# --- part 6 ---------------------------------------------------------------------------------


def section_noniid(runs: pd.DataFrame, metrics: pd.DataFrame) -> Section:
    """Part 6: non-i.i.d. (class-grouped) batches, Ioffe (2017) Fig. 3."""
    title = "6. Non-i.i.d. batches (Ioffe 2017, Fig. 3)"
    runs = _dedupe(runs)
    if runs.empty or "batching" not in runs:
        return _empty(title)
    runs = runs.assign(variant=runs["norm"] + ", " + runs["batching"])
    section = Section(title, _setup(
        runs, f"Batches of batch size {int(runs['batch_size'].iloc[0])} drawn from "
              f"{int(runs['classes_per_batch'].iloc[0])} classes at a time (class_grouped) vs "
              "random (i.i.d.) batches; test accuracy in eval mode uses the running statistics."))
    acc = final_frame(runs, metrics, M.TEST_ACC)
    grouped = "class_grouped"
    section.findings.append(Finding(
        "Non-i.i.d. batches hurt BN at inference (eval-mode test accuracy drops vs i.i.d. batches).",
        verdict(_values(acc, norm="batch", batching=grouped), _values(acc, norm="batch", batching="random"),
                higher_is_better=False, min_effect=ACC_MIN_EFFECT, what="BN test accuracy, grouped vs i.i.d.", **PCT)))
    train_mode = final_frame(runs, metrics, M.HOLDOUT_ACC_TRAIN_MODE)
    eval_mode = final_frame(runs, metrics, M.HOLDOUT_ACC_EVAL_MODE)
    bn_grouped = train_mode[(train_mode["norm"] == "batch") & (train_mode["batching"] == grouped)]
    change = bn_grouped["value"].to_numpy() - bn_grouped["run_id"].map(
        eval_mode.set_index("run_id")["value"]).to_numpy()
    section.findings.append(Finding(
        "With non-i.i.d. training batches, batch statistics at test time (train mode, on i.i.d. "
        "held-out batches) recover accuracy that the running statistics lose.",
        paired_verdict(change[np.isfinite(change)], min_effect=ACC_MIN_EFFECT,
                       what="held-out accuracy, train mode minus eval mode", **PCT)))
    recal = _recalibration_change(runs[(runs["norm"] == "batch") & (runs["batching"] == grouped)], metrics)
    if not recal.empty:
        section.findings.append(_recal_finding(recal, "BN trained on non-i.i.d. batches"))
    if "batch_renorm" in set(runs["norm"]):
        section.findings.append(Finding(
            "Batch Renormalization recovers from non-i.i.d. batches (beats BN on them).",
            verdict(_values(acc, norm="batch_renorm", batching=grouped), _values(acc, norm="batch", batching=grouped),
                    min_effect=ACC_MIN_EFFECT, what="test accuracy, batch_renorm vs batch (grouped)", **PCT)))
    order = sorted(acc["variant"].unique(), key=lambda v: (v.split(", ")[1], v))
    section.figures.append(FigureSpec(
        "noniid_final_acc", plots.plot_final_accuracy(acc, order=order, title="Non-i.i.d. batches"),
        "Final eval-mode test accuracy per norm and batching: mean, 95% CI, seeds."))
    curves = curve_frame(runs, metrics, M.TEST_ACC)
    if not curves.empty:
        section.figures.append(FigureSpec(
            "noniid_test_acc", plots.plot_curves(curves, title="Test accuracy", ylabel="test accuracy"),
            "Test accuracy over training per norm and batching (mean, 95% CI band)."))
    return section
