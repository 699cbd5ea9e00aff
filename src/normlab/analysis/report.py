"""`write_report(out_dir, experiment)`: the store -> report.html, report.md and the PNGs.

The report of an **experiment** (`normlab sweep`): final test accuracy per variant against the
no-norm (or first) variant, training curves, and a table of every variant. Every claim's verdict
is decided on its p adjusted across all the report's claims (Benjamini-Hochberg, `build_report`;
the study's report, `normlab.study.report`, is adjusted the same way). The report is written to
`<out_dir>/reports/<experiment>/` and reads only the store, so it can be rebuilt anywhere from
the results folder, without training.
"""

from __future__ import annotations

import platform
from pathlib import Path

import pandas as pd

from normlab.analysis import plots
from normlab.analysis.frames import curve_frame, final_frame, label_runs, varying_keys
from normlab.analysis.render import FigureSpec, Finding, Report, Section, adjust_report, write_files
from normlab.analysis.stats import aggregate, verdict
from normlab.experiments.errors import StoreError
from normlab.experiments.paths import safe_dir
from normlab.experiments.store import Store
from normlab.train import metrics as M

__all__ = ["write_report", "experiment_report", "build_report", "claims_frame", "provenance_lines", "METHODS"]

ACC_MIN_EFFECT = 0.005  # half an accuracy point: the smallest accuracy change a report calls an effect


def provenance_lines(store, experiments: list[str], runs: pd.DataFrame | None = None) -> list[str]:
    """Where and with what the numbers were made: store, versions, devices, wall time. `runs`:
    the experiments' runs frame when the caller has it (read from the store otherwise)."""
    if runs is None:
        frames = [f for f in (store.runs_frame(e) for e in experiments) if len(f)]
        runs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    lines = [f"Results store: {store.path}", f"Experiments: {', '.join(experiments)}"]
    if runs.empty:
        return lines
    unique = runs.drop_duplicates("run_id")
    counts = ", ".join(f"{n} {s}" for s, n in unique["status"].value_counts().items())
    lines.append(
        f"Runs: {len(unique)} ({counts}); training wall time {unique['seconds'].fillna(0).sum():.1f} s in total"
    )
    for key, label in (
        ("env.normlab", "normlab"),
        ("env.torch", "torch"),
        ("env.python", "python"),
        ("env.device", "device"),
        ("env.hostname", "host"),
        ("env.torch_threads", "torch threads"),
        ("env.git_commit", "git commit"),
    ):
        if key in unique:
            # (a numeric column with gaps is float: 1.0 threads reads as 1)
            values = sorted(
                {str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in unique[key].dropna()}
            )
            if values:
                lines.append(f"{label}: {', '.join(values)}")
    lines.append(f"Report written by normlab on {platform.platform()}")
    return lines


METHODS = (
    "Each claim compares per-seed values: Welch's t-test between two groups of independent runs, or "
    "a paired t-test for before/after measurements of the same runs; a permutation test where "
    "values have no spread (never p = 0 from a quantized measurement). Every claim's p is "
    "adjusted for the number of claims in this report (Benjamini-Hochberg). A claim is supported "
    "when its adjusted p < 0.05 and the whole 95% interval of the effect clears the smallest "
    "effect that matters; not supported when the adjusted p < 0.05 in the opposite direction or "
    "the interval lies below the smallest effect that matters; inconclusive at this many seeds "
    "otherwise (the sentence says why)."
)
"""What a verdict means; the report puts the verdict counts in front of it."""


def claims_frame(report: Report) -> pd.DataFrame:
    """Every claim of `report` with its numbers (not text), one row each, for a notebook or a
    results file: claim, part, effect, ci_low, ci_high (claimed direction, metric units, before
    the display scale), p_value, p_adjusted, n_a, n_b, paired, min_effect, verdict."""
    rows = []
    for section in report.sections:
        for finding in section.findings:
            v = finding.verdict
            rows.append(
                {
                    "claim": finding.claim,
                    "part": section.title,
                    "effect": v.effect,
                    "ci_low": v.ci_low,
                    "ci_high": v.ci_high,
                    "p_value": v.p_value,
                    "p_adjusted": float("nan") if v.p_adjusted is None else v.p_adjusted,
                    "n_a": v.n_a,
                    "n_b": v.n_b,
                    "paired": v.paired,
                    "min_effect": v.min_effect,
                    "verdict": v.label,
                }
            )
    columns = [
        "claim",
        "part",
        "effect",
        "ci_low",
        "ci_high",
        "p_value",
        "p_adjusted",
        "n_a",
        "n_b",
        "paired",
        "min_effect",
        "verdict",
    ]
    return pd.DataFrame(rows, columns=columns)


def build_report(title: str, sections: list[Section], provenance: list[str]) -> Report:
    """A Report of `sections` whose verdicts are adjusted across all of them (Benjamini-Hochberg)."""
    return adjust_report(Report(title, METHODS, sections, provenance))


def experiment_report(store, experiment: str) -> Report:
    """A report of any experiment: variants vs the no-norm (or first) variant, curves, table."""
    runs = store.runs_frame(experiment)
    metrics = store.metrics_frame(experiment, names=[M.TEST_ACC, M.TRAIN_LOSS, M.TEST_LOSS])
    if runs.empty:
        section = Section(experiment, "The experiment has no runs yet.")
        return Report(f"normlab report: {experiment}", "No runs.", [section], provenance_lines(store, [experiment]))
    runs = runs.drop_duplicates("run_id")
    keys = varying_keys(runs)
    runs = runs.assign(variant=label_runs(runs, keys))
    acc = final_frame(runs, metrics, M.TEST_ACC)
    variants = list(dict.fromkeys(acc["variant"]))
    baseline = next((v for v in variants if v == "none" or "norm=none" in v), variants[0])
    section = Section(
        "Final test accuracy per variant",
        f"{runs['run_id'].nunique()} runs; variants differ in {', '.join(keys) or 'nothing (seeds only)'}; "
        f"every variant is compared with {baseline!r}.",
    )
    for name in variants:
        if name != baseline:
            section.findings.append(
                Finding(
                    f"{name} reaches a higher test accuracy than {baseline}.",
                    verdict(
                        acc.loc[acc["variant"] == name, "value"],
                        acc.loc[acc["variant"] == baseline, "value"],
                        min_effect=ACC_MIN_EFFECT,
                        what="final test accuracy",
                        scale=100.0,
                        unit="%",
                    ),
                )
            )
    section.table = aggregate(acc, "variant", "value")
    if acc["value"].notna().any():
        section.figures.append(
            FigureSpec(
                "final_acc",
                plots.plot_final_accuracy(acc, title="Final test accuracy"),
                "Final test accuracy: mean, 95% CI and one dot per seed.",
            )
        )
    for name, label, logy in ((M.TEST_ACC, "test accuracy", False), (M.TRAIN_LOSS, "training loss", True)):
        curves = curve_frame(runs, metrics, name)
        if not curves.empty:
            section.figures.append(
                FigureSpec(
                    name,
                    plots.plot_curves(curves, title=label.capitalize(), ylabel=label, logy=logy),
                    f"{label.capitalize()} over training steps: mean over seeds and 95% CI band.",
                )
            )
    return build_report(f"normlab report: {experiment}", [section], provenance_lines(store, [experiment]))


def write_report(out_dir: str | Path, experiment: str) -> Path:
    """Write the report of `experiment` from the store in `out_dir` (a study's report:
    `normlab.study.report.write_study_report`; `normlab report` picks the right one).

    Args:
        out_dir: the results folder (holding `normlab.db`).
        experiment: an experiment name (see `normlab ls`).

    Returns:
        `<out_dir>/reports/<experiment>/`, holding report.html (self-contained), report.md
        and one PNG per figure.

    Example:
        >>> write_report("runs", "mnist1d-norm-batch") / "report.html"
        PosixPath('runs/reports/mnist1d-norm-batch/report.html')
    """
    out = Path(out_dir)
    with Store.open(out, create=False) as store:
        names = store.experiments()
        if experiment in names:
            report = experiment_report(store, experiment)
        else:
            raise StoreError(
                f"no experiment or study {experiment!r} in {str(out)!r}; known experiments: "
                f"{', '.join(names) if names else 'none yet'} (run `normlab study` or `normlab sweep` first)"
            )
    return write_files(report, safe_dir(out, "reports", experiment))  # no planted link followed
