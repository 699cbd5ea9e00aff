"""Part 12: BN and weight decay. Does weight decay help BN networks through the effective lr?

With BN after a hidden Linear, the layer's output does not depend on ||W||, so an SGD step
turns W's direction by about lr ||g|| / ||W||: the effective learning rate is lr / ||W||^2
(van Laarhoven 2017; Zhang et al. 2019; `normlab.train.effective_lr`). Without weight decay
||W|| grows and the effective lr decays; weight decay keeps ||W|| small. Li & Arora (2019):
on a scale-invariant network, SGD with momentum and weight decay at a constant lr is the same
training as no weight decay under the exponential schedule lr * alpha^(-2t) (`li_arora_alpha`).

Claims, SGD with momentum 0.9, the hidden layers' ||W|| probed once per epoch:
  (a) with BN, weight decay keeps the effective lr higher: lr_t / ||W_t||^2 at the end of
      training, weight decay vs none, both at one shared lr (a ratio, compared on a log scale);
  (b) weight decay improves BN's test accuracy, each at its own lr;
  (c) the mechanism: at the shared lr, BN *without* weight decay under Li & Arora's
      equivalent exponential schedule recovers most of weight decay's benefit (its accuracy
      lies above the midpoint of BN without and with weight decay, per seed);
  (d) without a norm, ||W|| is not scale-free: weight decay penalizes the function's scale;
      its accuracy effect there (own lrs) is reported with the norms.
The verdict on "weight decay helps BN networks through the effective lr" is composed from
(a)-(c) by `synthesis`, after the p adjustment.
"""

from __future__ import annotations

import math
import re

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
    paired_claim,
    plateau_note,
    setup_text,
    usable_range,
    verdict_label,
)
from normlab.train import metrics as M
from normlab.train.config import ScheduleConfig
from normlab.train.schedule import lr_factor

KEY = "weight_decay"
FILE = "weight_decay.yaml"
TIER = "full"
QUICK = {"set": {"epochs": 1}}
"""`--quick`: one epoch per run (one weight-norm probe each)."""

NONE, NONE_WD, BN, BN_WD = "none", "none + weight decay", "batch", "batch + weight decay"
SHARED, SHARED_WD, SHARED_EXP = (
    "batch @ shared lr",
    "batch + weight decay @ shared lr",
    "batch, exponential lr @ shared lr",
)
TUNED = (NONE, NONE_WD, BN, BN_WD)
HIDDEN_WEIGHT = re.compile(r"^blocks\.\d+\.linear\.weight$")
"""The MLP's hidden Linear weights: the ones a norm follows (with BN, the scale-invariant ones;
`normlab.train.effective_lr.scale_invariant_weights` finds the same). The head is not."""
LOG_MIN_EFFECT = math.log10(1.25)  # a 25% ratio of effective lrs
GAMMA_RTOL = 1e-6  # the exponential run's per-epoch factor vs Li & Arora's, relative

CLAIM_EFF = "With BN, weight decay keeps the effective lr higher"
CLAIM_ACC = "Weight decay improves BN's test accuracy (each at its own lr)"
CLAIM_ACC_SHARED = "Weight decay improves BN's test accuracy at the shared lr"
CLAIM_EXP = "Without weight decay, Li & Arora's equivalent exponential lr recovers most of weight decay's benefit"
CLAIM_NONE = "Weight decay improves the test accuracy of the network without a norm (each at its own lr)"

LITERATURE = [
    Literature(
        CLAIM_EFF,
        "van Laarhoven (2017) and Zhang et al. (2019): with BN, ||W|| grows without weight decay and the "
        "effective lr lr/||W||^2 decays; weight decay keeps ||W|| small and the effective lr high.",
        SUPPORTED,
    ),
    Literature(
        CLAIM_ACC,
        "Zhang et al. (2019) found weight decay improving the test accuracy of BN networks trained with SGD "
        "(VGG16 and ResNet32 on CIFAR-10/100), and traced the gain to the effective lr.",
        SUPPORTED,
    ),
    Literature(
        CLAIM_ACC_SHARED,
        "Zhang et al. (2019): weight decay improves BN networks trained with SGD at a fixed lr schedule.",
        SUPPORTED,
    ),
    Literature(
        CLAIM_EXP,
        "Li & Arora (2019) prove that, on a scale-invariant network, SGD with momentum and weight decay at "
        "a constant lr trains exactly as no weight decay under the exponentially growing lr, and train "
        "CIFAR-10 ResNets with such schedules (here the head and BN's gamma and beta are not "
        "scale-invariant, so the match is approximate).",
        SUPPORTED,
    ),
    Literature(
        CLAIM_NONE,
        "van Laarhoven (2017): without normalization L2 weight decay is an ordinary penalty on the "
        "function's scale, not an effective-lr effect; no published prediction for this MLP on MNIST-1D.",
        None,
    ),
]


def li_arora_alpha(lr: float, weight_decay: float, momentum: float) -> float:
    """The root near 1 of x^2 - (1 + momentum - lr * weight_decay) x + momentum = 0.

    Li & Arora (2019): SGD with momentum, weight decay and a constant lr on a scale-invariant
    loss is equivalent to SGD with the same momentum, no weight decay and lr_t = lr *
    alpha^(-2t-1) (step t). Without momentum alpha = 1 - lr * weight_decay.
    """
    b = 1.0 + momentum - lr * weight_decay
    disc = b * b - 4.0 * momentum
    if not (lr > 0 and weight_decay >= 0 and 0 <= momentum < 1) or disc < 0:
        raise ValueError(
            f"li_arora_alpha: expected lr > 0, weight_decay >= 0, 0 <= momentum < 1 with a "
            f"real root, got lr={lr}, weight_decay={weight_decay}, momentum={momentum}"
        )
    return (b + math.sqrt(disc)) / 2.0


def equivalent_gamma_per_epoch(lr: float, weight_decay: float, momentum: float, steps_per_epoch: int) -> float:
    """The `exponential` schedule's per-epoch factor alpha^(-2 * steps_per_epoch): lr * that
    ** (t / steps_per_epoch) = lr * alpha^(-2t), Li & Arora's schedule without its constant
    alpha^(-1) (a 0.03% change of lr at lr 3e-2, wd 1e-3)."""
    return li_arora_alpha(lr, weight_decay, momentum) ** (-2.0 * steps_per_epoch)


def _schedule(run: pd.Series) -> ScheduleConfig:
    """The run's schedule, from its flattened config columns (`schedule.name`, ...)."""
    fields = {k.split(".", 1)[1]: run[k] for k in run.index if k.startswith("schedule.") and pd.notna(run[k])}
    return ScheduleConfig(**fields)


def effective_lr_trace(data: PartData, labels: tuple[str, ...]) -> pd.DataFrame:
    """Per run of `labels`, probe step and hidden layer: ||W|| and the effective lr.

    Returns columns run_id, variant, seed, step, layer, weight_norm (||W||_F after the update of
    step `step`), lr (the lr of the next step: run lr x the schedule's factor at 0-based step
    `step`, as the engine applies it) and effective_lr = lr / weight_norm^2. A run listed under
    two variants appears under both. For a network without a norm the same number is formed
    for comparison, though there ||W|| is not scale-free.
    """
    columns = ["run_id", "variant", "seed", "step", "layer", "weight_norm", "lr", "effective_lr"]
    runs = data.of(*labels)
    m = data.metrics[data.metrics["run_id"].isin(runs["run_id"])]
    spe = m[m["name"] == M.STEPS_PER_EPOCH].groupby("run_id")["value"].first()
    layer = m["name"].str.slice(len("weight_norm/"))
    wanted = m["name"].str.startswith("weight_norm/") & layer.map(lambda n: bool(HIDDEN_WEIGHT.match(n)))
    norms = m.assign(layer=layer)[wanted]
    if norms.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    by_id = runs.drop_duplicates("run_id").set_index("run_id")
    for run_id, run_norms in norms.groupby("run_id"):
        run = by_id.loc[run_id]
        schedule = _schedule(run)
        per_epoch = int(spe.get(run_id, 0)) or 1
        total = int(run["steps"]) if pd.notna(run.get("steps")) else int(run_norms["step"].max())
        for r in run_norms.itertuples():
            lr = float(run["lr"]) * lr_factor(int(r.step), schedule, total, per_epoch)
            w = float(r.value)
            rows.append((run_id, int(r.step), r.layer, w, lr, lr / w**2 if w > 0 else math.nan))
    trace = pd.DataFrame(rows, columns=["run_id", *columns[3:]])
    return runs[["run_id", "variant", "seed"]].merge(trace, on="run_id")[columns]


def at_end(trace: pd.DataFrame) -> pd.DataFrame:
    """Per run, at its last probe: the mean over hidden layers of ||W|| and of the effective lr."""
    if trace.empty:
        return pd.DataFrame(columns=["run_id", "variant", "seed", "weight_norm", "effective_lr"])
    last = trace[trace["step"] == trace.groupby("run_id")["step"].transform("max")]
    return last.groupby(["run_id", "variant", "seed"], as_index=False)[["weight_norm", "effective_lr"]].mean()


def _per_step(trace: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per run and step: the mean over hidden layers of `column`, as plot_curves wants it."""
    return trace.groupby(["run_id", "variant", "step"], as_index=False)[column].mean().rename(columns={column: "value"})


def _log_col(end: pd.DataFrame, variant: str, column: str) -> np.ndarray:
    v = end.loc[end["variant"] == variant, column].to_numpy(dtype=float)
    return np.log10(v[np.isfinite(v) & (v > 0)])


def _mean(end: pd.DataFrame, variant: str, column: str) -> float:
    v = end.loc[end["variant"] == variant, column].to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def midpoint_changes(acc: pd.DataFrame, exp: str, without: str, with_wd: str) -> np.ndarray:
    """Per seed: acc(exp) - (acc(without) + acc(with_wd)) / 2. Positive: the exponential run
    recovers more than half of weight decay's gain (with_wd - without)."""
    by = {v: acc[acc["variant"] == v].set_index("seed")["value"] for v in (exp, without, with_wd)}
    return (by[exp] - (by[without] + by[with_wd]) / 2.0).dropna().to_numpy(dtype=float)


def gamma_check(data: PartData) -> tuple[bool, str] | None:
    """Whether the exponential run's per-epoch factor is Li & Arora's for the shared-lr weight
    decay run (same lr and momentum, its weight decay, the stored steps per epoch): (matches,
    a sentence saying so with the numbers); None without those runs."""
    if not data.has(SHARED_EXP, SHARED_WD):
        return None
    exp = data.of(SHARED_EXP).iloc[0]
    wd = data.of(SHARED_WD).iloc[0]
    spe = data.metrics[
        (data.metrics["name"] == M.STEPS_PER_EPOCH) & data.metrics["run_id"].isin(data.of(SHARED_EXP)["run_id"])
    ]["value"]
    if spe.empty or exp.get("schedule.name") != "exponential":
        return False, f"The '{SHARED_EXP}' runs have no exponential schedule or no stored steps per epoch."
    want = equivalent_gamma_per_epoch(
        float(wd["lr"]), float(wd["optim.weight_decay"]), float(wd["optim.momentum"]), int(spe.iloc[0])
    )
    got = float(exp["schedule.gamma_per_epoch"])
    if not math.isclose(got, want, rel_tol=GAMMA_RTOL) or not math.isclose(float(exp["lr"]), float(wd["lr"])):
        return False, (
            f"Mismatch: the exponential run's lr grows by {got:.6g} per epoch at lr {float(exp['lr']):.0e}, "
            f"but Li & Arora's equivalent of weight decay {float(wd['optim.weight_decay']):.0e} at lr "
            f"{float(wd['lr']):.0e} is {want:.6g}; claim (c) does not test their equivalence."
        )
    return True, (
        f"The exponential run's lr grows by a factor {got:.6g} per epoch ({int(spe.iloc[0])} steps), "
        f"Li & Arora's equivalent of weight decay {float(wd['optim.weight_decay']):.0e} at lr "
        f"{float(wd['lr']):.0e} and momentum {float(wd['optim.momentum']):g}."
    )


def section(data: PartData) -> Section:
    title = "12. BN and weight decay"
    if data.runs.empty or not data.has(BN, BN_WD):
        return empty(title, "Not run: this part needs the variants 'batch' and 'batch + weight decay'.")
    present = tuple(v for v in (*TUNED, SHARED, SHARED_WD, SHARED_EXP) if data.has(v))
    wd_value = float(data.of(BN_WD)["optim.weight_decay"].iloc[0]) if "optim.weight_decay" in data.runs else math.nan
    sec = Section(
        title,
        setup_text(
            data,
            (
                f"Part 1's MLP with SGD and momentum ({data.budget(*present)}), with and without a norm, each with and "
                f"without weight decay {wd_value:.0e} (on the Linear weights, not on biases or gamma/beta). The hidden "
                "layers' ||W|| is probed once per epoch; the effective lr is lr / ||W||^2, the lr being the run's lr "
                "times its schedule at that step. The mechanism test runs BN at one shared lr without weight decay, "
                "with it, and without it under Li & Arora's equivalent exponential schedule."
            ),
        ),
    )
    sec.notes += edge_notes(data)
    check = gamma_check(data)
    if check is not None and not check[0]:
        sec.notes.append(check[1])

    trace = effective_lr_trace(data, present)
    end = at_end(trace)
    acc = data.best(*present)

    if data.has(SHARED, SHARED_WD) and not end.empty:
        sec.findings.append(
            Finding(
                f"{CLAIM_EFF}: at the end of training the hidden layers' lr over squared weight norm is higher "
                f"with weight decay than without ({data.lr_of(SHARED_WD)} for both).",
                verdict(
                    _log_col(end, SHARED_WD, "effective_lr"),
                    _log_col(end, SHARED, "effective_lr"),
                    min_effect=LOG_MIN_EFFECT,
                    what="log10 effective lr at the end (mean over hidden layers)",
                ),
            )
        )
    sec.findings.append(
        acc_claim(
            f"{CLAIM_ACC}.",
            acc,
            BN_WD,
            BN,
            f"test accuracy at the best held-out epoch ({data.lr_of(BN_WD)} vs {data.lr_of(BN)})",
        )
    )
    if data.has(SHARED, SHARED_WD) and not _same_runs(data, (BN, SHARED), (BN_WD, SHARED_WD)):
        sec.findings.append(
            acc_claim(f"{CLAIM_ACC_SHARED} ({data.lr_of(SHARED)}).", acc, SHARED_WD, SHARED, BEST_ACC_LABEL)
        )
    elif data.has(SHARED, SHARED_WD):
        sec.measured.append(
            "Stage 1 selected the shared lr for both BN variants, so the accuracy comparison at the "
            "shared lr is the one at their own lrs (the same runs; tested once)."
        )
    if data.has(SHARED, SHARED_WD, SHARED_EXP):
        sec.findings.append(
            paired_claim(
                f"{CLAIM_EXP} ({data.lr_of(SHARED)}): per seed, its accuracy lies above the midpoint of BN without "
                "and with weight decay.",
                midpoint_changes(acc, SHARED_EXP, SHARED, SHARED_WD),
                "accuracy of the exponential-lr run minus the midpoint of no weight decay and weight decay",
            )
        )
    if data.has(NONE, NONE_WD):
        sec.findings.append(
            acc_claim(
                f"{CLAIM_NONE}.",
                acc,
                NONE_WD,
                NONE,
                f"test accuracy at the best held-out epoch ({data.lr_of(NONE_WD)} vs {data.lr_of(NONE)})",
            )
        )

    sec.measured += _measured(data, end, acc)
    if check is not None and check[0]:
        sec.measured.append(check[1])
    sec.table = _table(data, end, acc)
    sec.measured.append(
        "Table: per variant, its lr (selected or shared; at the grid's edge or not), the mean "
        "over seeds at the end of training of the hidden layers' ||W|| and effective lr, and the "
        "mean test accuracy at the best held-out epoch."
    )
    for extra in (usable_range(data), plateau_note(data, [v for v in TUNED if data.has(v)])):
        if extra:
            sec.measured.append(extra)
    _figures(data, sec, trace, acc, present)
    sec.measured.append(synthesis(sec))
    return sec


def _same_runs(data: PartData, *pairs: tuple[str, str]) -> bool:
    """True when each pair of variants holds exactly the same runs (same configs, trained once)."""
    return all(set(data.of(a)["run_id"]) == set(data.of(b)["run_id"]) for a, b in pairs)


def _ratio(end: pd.DataFrame, a: str, b: str, column: str) -> float:
    return _mean(end, a, column) / _mean(end, b, column)


def _measured(data: PartData, end: pd.DataFrame, acc: pd.DataFrame) -> list[str]:
    """Sentences with the numbers behind (a), (c) and (d), all from the stored runs."""
    out = []
    if end.empty:
        return ["||W|| was not measured (the runs have no weight_norm probes)."]
    pairs = [(label, wd) for label, wd in ((BN, BN_WD), (NONE, NONE_WD), (SHARED, SHARED_WD)) if data.has(label, wd)]
    for label, wd in pairs:
        out.append(
            f"{label} vs {wd}: at the end, ||W|| (mean over hidden layers) {_mean(end, label, 'weight_norm'):.3g} vs "
            f"{_mean(end, wd, 'weight_norm'):.3g}; effective lr {_mean(end, label, 'effective_lr'):.3g} vs "
            f"{_mean(end, wd, 'effective_lr'):.3g} (weight decay's is {_ratio(end, wd, label, 'effective_lr'):.3g}x)."
        )
    if data.has(NONE, NONE_WD):
        out.append(
            "Without a norm the output scales with ||W||, so there lr/||W||^2 is not an effective lr: "
            "weight decay shrinks the function itself (a capacity penalty)."
        )
    if data.has(SHARED_WD, SHARED_EXP):
        out.append(
            f"The exponential-lr run ends at {_ratio(end, SHARED_EXP, SHARED_WD, 'effective_lr'):.3g}x the "
            "weight-decay run's effective lr (1 = its trajectory reproduced) with "
            f"{_ratio(end, SHARED_EXP, SHARED_WD, 'weight_norm'):.3g}x its ||W||."
        )
    if data.has(SHARED, SHARED_WD, SHARED_EXP):
        mean = acc.groupby("variant")["value"].mean()
        gain = mean[SHARED_WD] - mean[SHARED]
        if gain > 0:
            out.append(
                f"Weight decay's gain at the shared lr is {100 * gain:.2f} points; the exponential lr "
                f"recovers {(mean[SHARED_EXP] - mean[SHARED]) / gain:.0%} of it (means over seeds)."
            )
        else:
            out.append(
                f"At the shared lr weight decay changed the mean accuracy by {100 * gain:+.2f} points: "
                "there is no gain for the exponential lr to recover."
            )
    return out


def _table(data: PartData, end: pd.DataFrame, acc: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for label in (*TUNED, SHARED, SHARED_WD, SHARED_EXP):
        if not data.has(label):
            continue
        sel = data.selection.get(label)
        rows.append(
            {
                "variant": label,
                "lr": data.lr_of(label).removeprefix("lr "),
                "at edge": "yes" if sel is not None and sel.at_edge else "",
                "weight norm, end": f"{_mean(end, label, 'weight_norm'):.3g}" if not end.empty else "-",
                "effective lr, end": f"{_mean(end, label, 'effective_lr'):.3g}" if not end.empty else "-",
                "test acc. (%)": f"{100 * acc.loc[acc['variant'] == label, 'value'].mean():.1f}",
            }
        )
    return pd.DataFrame(rows)


def _figures(data: PartData, sec: Section, trace: pd.DataFrame, acc: pd.DataFrame, present: tuple[str, ...]) -> None:
    tuned = [v for v in TUNED if data.has(v)]
    if not trace.empty:
        mine = trace[trace["variant"].isin(tuned)]
        sec.figures.append(
            FigureSpec(
                "wd_weight_norm",
                plots.plot_curves(
                    _per_step(mine, "weight_norm"),
                    title="||W|| of the hidden layers",
                    ylabel="||W|| (mean over hidden layers)",
                    budget="each at its own lr",
                ),
                f"Hidden layers' ||W|| over optimizer steps ({data.budget(*tuned)}), each variant at its own lr: mean "
                "over seeds with the 95% CI band.",
            )
        )
        sec.figures.append(
            FigureSpec(
                "wd_effective_lr",
                plots.plot_curves(
                    _per_step(mine, "effective_lr"),
                    title="Effective lr",
                    ylabel="lr / ||W||^2",
                    logy=True,
                    budget="each at its own lr",
                ),
                "Effective lr lr/||W||^2 of the hidden layers over optimizer steps, each variant at its own lr (for "
                "the networks without a norm a formal number: there ||W|| is not scale-free): mean over seeds with the "
                "95% CI band.",
            )
        )
        shared = trace[trace["variant"].isin((SHARED, SHARED_WD, SHARED_EXP))]
        if not shared.empty:
            sec.figures.append(
                FigureSpec(
                    "wd_exponential",
                    plots.plot_curves(
                        _per_step(shared, "effective_lr"),
                        title="Mechanism test",
                        ylabel="lr / ||W||^2",
                        logy=True,
                        budget=data.lr_of(SHARED_WD),
                    ),
                    "Effective lr of BN at the shared lr: without weight decay, with it, and without it under Li & "
                    "Arora's exponential lr; mean over seeds with the 95% CI band.",
                )
            )
    sec.figures.append(
        FigureSpec(
            "wd_accuracy",
            plots.plot_final_accuracy(
                acc,
                order=list(present),
                title="Each variant at its lr",
                ylabel=BEST_ACC_LABEL,
                budget=f"at {data.steps(*present)}",
            ),
            f"Test accuracy at each run's best held-out epoch ({data.budget(*present)}): mean, 95% CI and one dot "
            "per seed.",
        )
    )


def synthesis(sec: Section) -> str:
    """The verdict on "weight decay helps BN networks through the effective lr", from the
    section's own verdicts (call again after the study's p adjustment; the last sentence)."""
    head = "Verdict on 'weight decay helps BN networks through the effective lr': "
    eff, helps = verdict_label(sec, CLAIM_EFF), verdict_label(sec, CLAIM_ACC)
    # without its own finding, the shared-lr comparison is the own-lr one (the same runs)
    shared, mech = verdict_label(sec, CLAIM_ACC_SHARED) or helps, verdict_label(sec, CLAIM_EXP)
    eff_text = {
        SUPPORTED: "weight decay did keep BN's effective lr measurably higher",
        NOT_SUPPORTED: "weight decay did not keep BN's effective lr measurably higher",
        INCONCLUSIVE: "the effective-lr comparison is inconclusive",
    }.get(eff or "", "the effective lr was not measured")
    if helps == NOT_SUPPORTED:
        return (
            head + "not supported here: weight decay did not measurably improve BN's accuracy at its own lr, "
            f"so there is no benefit to explain ({eff_text})."
        )
    if helps == SUPPORTED and eff == SUPPORTED and shared == SUPPORTED and mech == SUPPORTED:
        return (
            head + "supported: weight decay improved BN's accuracy, kept its effective lr higher, and without "
            "weight decay the equivalent exponential lr recovered most of the gain, as Li & Arora predict."
        )
    if helps == SUPPORTED and shared == SUPPORTED and mech == NOT_SUPPORTED:
        return (
            head + f"weight decay helps BN, but not (only) through the effective lr: the equivalent "
            f"exponential lr did not recover most of its gain ({eff_text})."
        )
    parts = [("the accuracy gain at each variant's own lr", helps), ("the exponential-lr test", mech)]
    if verdict_label(sec, CLAIM_ACC_SHARED) is not None:
        parts.insert(1, ("the gain at the shared lr", shared))
    rest = "; ".join(f"{text}: {label or 'not run'}" for text, label in parts if label != SUPPORTED)
    if shared == NOT_SUPPORTED:
        return (
            head + "not tested: at the shared lr weight decay gave no measurable gain for the exponential lr "
            f"to recover ({eff_text}; {rest})."
        )
    return head + f"inconclusive at these seeds ({eff_text}; {rest})."
