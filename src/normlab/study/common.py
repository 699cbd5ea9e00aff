"""What every part's report section shares: its data, frame helpers, effect sizes, wording.

A section is a function `section(data: PartData) -> Section`. `PartData` holds the part's
evaluation runs (one row per run and variant, `variant` = the label in the part's file), their
metrics, and stage 1's selection (lr grid x held-out score per tuned variant).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from normlab.analysis.frames import final_frame
from normlab.analysis.render import Finding, Section
from normlab.analysis.stats import (
    INCONCLUSIVE,
    paired_verdict,
    steps_to_target,
    verdict,
)
from normlab.study.protocol import Selection, at_best_holdout
from normlab.train import metrics as M

PCT = {"scale": 100.0, "unit": "%"}  # accuracies are fractions; the text shows percent
ACC_MIN_EFFECT = 0.005  # half an accuracy point: the smallest accuracy change we call an effect
LOSS_MIN_EFFECT = 0.02  # nats: the smallest loss gap we call an effect
BEST_ACC_LABEL = "test acc. (best held-out epoch)"
RECAL_TEST_ACC = "recal_test_acc"
"""Test accuracy (eval mode) after `normlab.layers.recalibrate_bn` on i.i.d. training batches,
stored by the study (`normlab.study.recalibrate`) at a run's last step."""


@dataclass
class PartData:
    """One part's stored results, ready for its section."""

    runs: pd.DataFrame  # evaluation runs: runs_frame rows + `variant`
    metrics: pd.DataFrame  # their metrics: run_id, step, epoch, name, value
    selection: dict[str, Selection] = field(default_factory=dict)  # tuned label -> stage 1

    def of(self, *labels: str) -> pd.DataFrame:
        """The runs of the given variants (one row per run and variant)."""
        return self.runs[self.runs["variant"].isin(labels)]

    def has(self, *labels: str) -> bool:
        return set(labels) <= set(self.runs["variant"]) if len(self.runs) else False

    def best(self, *labels: str, name: str = M.TEST_ACC) -> pd.DataFrame:
        """Per run of `labels`: `name` at the run's best held-out epoch (see at_best_holdout)."""
        return at_best_holdout(self.of(*labels), self.metrics, name)

    def final(self, *labels: str, name: str = M.TEST_ACC, how: str = "last") -> pd.DataFrame:
        return final_frame(self.of(*labels), self.metrics, name, how=how)

    def budget(self, *labels: str) -> str:
        """ "1250 steps (25 epochs) at batch size 64" for the runs of `labels`, as they ran
        (steps done; epochs from the runs' steps_per_epoch)."""
        runs = self.of(*labels).drop_duplicates("run_id")
        if runs.empty or runs["steps"].isna().all():
            return "not run"
        per_epoch = self.metrics[self.metrics["name"] == M.STEPS_PER_EPOCH].groupby("run_id")["value"].first()
        texts = []
        for size, rows in runs.groupby("batch_size"):
            steps = int(rows["steps"].max())
            spe = per_epoch.reindex(rows["run_id"]).dropna()
            epochs = f" ({steps / float(spe.iloc[0]):.3g} epochs)" if len(spe) else ""
            texts.append(f"{steps} steps{epochs} at batch size {int(size)}")
        return "; ".join(texts)

    def steps(self, *labels: str) -> str:
        """ "1250 steps": the most steps a run of `labels` took (for a figure's axis)."""
        runs = self.of(*labels)
        return f"{int(runs['steps'].max())} steps" if len(runs) and runs["steps"].notna().any() else ""

    def lr_of(self, label: str) -> str:
        """ "lr 3e-03" (selected, or as run) for a caption."""
        lrs = sorted(set(self.of(label)["lr"]))
        return "lr " + ", ".join(f"{x:.0e}" for x in lrs) if lrs else "not run"


def values(frame: pd.DataFrame, **where) -> np.ndarray:
    """The `value` column of the rows matching every column == value given."""
    mask = np.ones(len(frame), dtype=bool)
    for column, wanted in where.items():
        mask &= (frame[column] == wanted).to_numpy()
    return frame.loc[mask, "value"].to_numpy(dtype=float)


def seed_change(frame: pd.DataFrame, before: str, after: str) -> np.ndarray:
    """Per seed: the value of variant `after` minus that of variant `before` (paired by seed)."""
    a = frame[frame["variant"] == after].set_index("seed")["value"]
    b = frame[frame["variant"] == before].set_index("seed")["value"]
    return (a - b).dropna().to_numpy(dtype=float)


def acc_claim(claim: str, frame: pd.DataFrame, variant: str, baseline: str, what: str) -> Finding:
    """ "variant has a higher accuracy than baseline" on one number per run."""
    return Finding(
        claim,
        verdict(
            values(frame, variant=variant), values(frame, variant=baseline), min_effect=ACC_MIN_EFFECT, what=what, **PCT
        ),
    )


def interaction_claim(
    claim: str, frame: pd.DataFrame, treated: tuple[str, str], control: tuple[str, str], what: str, hurts: bool = True
) -> Finding:
    """A change (before -> after) on the treated network against the same change on the
    control network, per seed: the difference of differences (hurts: the treated one's change
    is lower)."""
    return Finding(
        claim,
        verdict(
            seed_change(frame, *treated),
            seed_change(frame, *control),
            higher_is_better=not hurts,
            min_effect=ACC_MIN_EFFECT,
            what=what,
            **PCT,
        ),
    )


def paired_claim(claim: str, changes, what: str, higher_is_better: bool = True) -> Finding:
    return Finding(
        claim,
        paired_verdict(
            np.asarray(changes, dtype=float),
            higher_is_better=higher_is_better,
            min_effect=ACC_MIN_EFFECT,
            what=what,
            **PCT,
        ),
    )


def empty(title: str, why: str = "Not run (no runs stored for this part).") -> Section:
    return Section(title=title, setup=why)


def setup_text(data: PartData, text: str) -> str:
    """The section's set-up paragraph: `text`, the protocol, the runs and their statuses."""
    runs = data.runs.drop_duplicates("run_id")
    seeds = sorted(int(s) for s in runs["seed"].unique())
    statuses = runs["status"].value_counts().to_dict()
    status = ", ".join(f"{v} {k}" for k, v in sorted(statuses.items()))
    tuned = ""
    if data.selection:
        grid = sorted({float(lr) for s in data.selection.values() for lr in s.grid["lr"]})
        tuned = (
            f" Each tuned variant ran at its own lr, selected on the held-out 20% of the training "
            f"split from the grid {', '.join(f'{x:.0e}' for x in grid)}; each run is scored by its "
            "test accuracy at its best held-out epoch."
        )
    return f"{text}{tuned} {len(runs)} evaluation runs ({status}), seeds {seeds}."


def selection_table(data: PartData) -> pd.DataFrame | None:
    """Stage 1 as a table: one row per tuned variant, mean best held-out accuracy per lr (%),
    the selected lr, and a flag when it sits at the grid's edge."""
    if not data.selection:
        return None
    rows = []
    for label, sel in data.selection.items():
        row = {"variant": label}
        for r in sel.grid.itertuples():
            score = "diverged" if r.diverged else "failed" if r.failed else f"{100 * r.score:.1f}"
            row[f"{r.lr:.0e}"] = score
        row["selected lr"] = f"{sel.lr:.0e}" if sel.lr is not None else "none"
        row["at edge"] = "yes" if sel.at_edge else ""
        rows.append(row)
    return pd.DataFrame(rows).fillna("-")


def selected_lrs_text(data: PartData) -> str | None:
    """ "Stage 1 selected lrs: none: 1e-02; batch: 3e-03 (at the edge)", or None without stage 1."""
    sel = selection_table(data)
    if sel is None:
        return None
    return "Stage 1 selected lrs: " + "; ".join(
        f"{r['variant']}: {r['selected lr']}{' (at the edge)' if r['at edge'] else ''}" for _, r in sel.iterrows()
    )


def verdict_label(sec: Section, head: str) -> str | None:
    """The (adjusted) verdict label of the section's first claim starting with `head`; None
    when no such claim was made (for a part's composed verdict)."""
    found = [f.verdict.label for f in sec.findings if f.claim.startswith(head)]
    return found[0] if found else None


def usable_range(data: PartData, within: float = 0.02) -> str | None:
    """Per tuned variant, the lrs of the grid whose held-out score is within `within` (2
    points) of its best: the range where it trains well (Bjorck et al. 2018's question)."""
    parts = []
    for label, sel in data.selection.items():
        ok = sel.grid.dropna(subset=["score"])
        ok = ok[ok["score"] >= ok["score"].max() - within] if len(ok) else ok
        if len(ok):
            parts.append(f"{label}: {ok['lr'].min():.0e} to {ok['lr'].max():.0e}")
    if not parts:
        return None
    return (
        f"Learning rates within {100 * within:.0f} points of each variant's best held-out accuracy "
        "(stage 1): " + "; ".join(parts) + "."
    )


def edge_notes(data: PartData) -> list[str]:
    notes = []
    for label, sel in data.selection.items():
        if sel.lr is None:
            notes.append(f"{label}: every lr of the grid diverged on a selection seed; not evaluated.")
        elif sel.at_edge:
            notes.append(
                f"{label}: the selected lr {sel.lr:.0e} is at the edge of the grid, so a better lr may lie outside it."
            )
    return notes


def plateau_note(data: PartData, labels: list[str]) -> str | None:
    """Did training finish? The mean held-out accuracy gained in the last third of the runs'
    evaluations (from the best of the first two thirds to the best overall), in points."""
    hold = data.metrics[
        (data.metrics["name"] == M.HOLDOUT_ACC_EVAL_MODE) & data.metrics["run_id"].isin(data.of(*labels)["run_id"])
    ]
    gains = []
    for _, run in hold.groupby("run_id"):
        v = run.sort_values("step")["value"].to_numpy(dtype=float)
        if v.size >= 3:
            cut = max(1, (2 * v.size) // 3)
            gains.append(np.nanmax(v) - np.nanmax(v[:cut]))
    if not gains:
        return None
    gain = 100 * float(np.mean(gains))
    verdict_text = "the held-out curves have plateaued" if gain < 1.0 else "training had not converged"
    return (
        f"Budget check: in the last third of training the best held-out accuracy rose by "
        f"{gain:.2f} points on average ({verdict_text}; each run is scored at its best held-out epoch)."
    )


def steps_to(curves: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per run: first evaluation step with value >= target; a run that never gets there is
    counted at its last step (a lower bound, so the comparison stays conservative)."""
    rows = []
    for run_id, run in curves.groupby("run_id"):
        hit = steps_to_target(run["step"], run["value"], target)
        censored = math.isnan(hit)
        rows.append(
            {
                "run_id": run_id,
                "variant": run["variant"].iloc[0],
                "value": float(run["step"].max()) if censored else hit,
                "censored": censored,
            }
        )
    return pd.DataFrame(rows, columns=["run_id", "variant", "value", "censored"])


def layer_order(layer: str) -> tuple[int, str]:
    """blocks.0.linear < blocks.1.linear < head: by the first number in the name, head last."""
    found = re.search(r"\d+", layer)
    return (int(found.group()) if found else 10**6, layer)


def hidden_text(frame: pd.DataFrame) -> str:
    value = frame["hidden"].iloc[0] if "hidden" in frame and len(frame) else None
    return "[512, 256]" if value is None or value == "null" else str(value)


def recalibration_change(data: PartData, label: str) -> np.ndarray:
    """Per run of `label` with a `recal_test_acc`: accuracy after minus before recalibration
    (both eval mode, on the test split, of the final model)."""
    runs = data.of(label)
    after = final_frame(runs, data.metrics, RECAL_TEST_ACC).set_index("run_id")["value"]
    before = final_frame(runs, data.metrics, M.TEST_ACC).set_index("run_id")["value"]
    return (after - before).dropna().to_numpy(dtype=float)


@dataclass(frozen=True)
class Literature:
    """What published work found about a claim: `claim` is a piece of the claim's text that
    identifies it, `expects` the verdict the literature predicts (None: no clear prediction)."""

    claim: str
    found: str
    expects: str | None


def attach_literature(section: Section, entries: list[Literature]) -> None:
    """Give each finding that an entry matches what the literature found and whether this run
    agrees, from the finding's final verdict (call it after the p adjustment)."""
    for finding in section.findings:
        entry = next((e for e in entries if e.claim in finding.claim), None)
        if entry is None:
            continue
        label = finding.verdict.label
        if entry.expects is None:
            agree = "No clear prediction to compare this run with."
        elif label == INCONCLUSIVE:
            agree = "This run cannot tell (inconclusive)."
        elif label == entry.expects:
            agree = "This run agrees."
        else:
            agree = "This run disagrees."
        finding.literature = f"{entry.found} {agree}"
