"""The study's report: one section per part, from the store only (no training).

`study_report(store, name)` reads the study's two experiments ("<name>.select",
"<name>.eval"), derives each part's lr selection from the stored selection runs, and asks each
part's `section` for its claims, verdicts, tables and figures. `write_study_report` writes
report.html, report.md and the PNGs with `normlab.analysis.render`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from normlab.analysis.render import Report, Section, adjust_report, write_files
from normlab.analysis.report import METHODS, provenance_lines
from normlab.experiments.errors import StoreError
from normlab.experiments.paths import safe_dir
from normlab.experiments.store import DB_NAME, Store
from normlab.study.common import PartData, attach_literature
from normlab.study.part7_anatomy import BN_TEXT
from normlab.study.protocol import stored_selection
from normlab.study.registry import FULL_TIER_COMMAND, PARTS, full_tier_name, parts_for, read_spec, tier_of_study

__all__ = ["is_study", "stored_study", "study_report", "write_study_report"]

EMPTY_METRICS = pd.DataFrame(columns=["run_id", "step", "epoch", "name", "value"])


def is_study(store: Store, name: str) -> bool:
    """True when `name` is a study stored in `store` (it has "<name>.eval")."""
    return f"{name}.eval" in store.experiments()


def stored_study(out_dir: str | Path, name: str) -> bool:
    """True when the results folder `out_dir` holds the study `name` (False: no store there)."""
    if not (Path(out_dir) / DB_NAME).exists():
        return False
    with Store.open(out_dir, create=False) as store:
        return is_study(store, name)


def _split(runs: pd.DataFrame) -> pd.DataFrame:
    part, _, label = runs["group"].str.partition("/").values.T if len(runs) else ([], [], [])
    return runs.assign(part=part, variant=label)


PROTOCOL = (
    "Every variant ran at its own learning rate, selected from a half-decade grid on a held-out slice "
    "of the training split (never the test split), then evaluation seeds; each run is scored at its "
    "best held-out epoch. "
)


def study_report(store: Store, name: str) -> Report:
    """The report of the study `name` stored in `store`."""
    names = store.experiments()
    used = [e for e in (f"{name}.select", f"{name}.eval") if e in names]
    runs = _split(store.runs_frame(f"{name}.eval")) if f"{name}.eval" in names else pd.DataFrame()
    metrics = store.metrics_frame(f"{name}.eval") if f"{name}.eval" in names else EMPTY_METRICS
    select = store.runs_frame(f"{name}.select") if f"{name}.select" in names else pd.DataFrame()
    chosen_by_part = stored_selection(store, name)
    parts = parts_for(tier_of_study(name))
    sections = []
    for part in parts:
        mine = runs[runs["part"] == part.KEY] if len(runs) else runs
        chosen = chosen_by_part.get(part.KEY, {})
        sections.append(
            part.section(
                PartData(
                    runs=mine if len(mine) else pd.DataFrame(columns=["run_id", "group", "variant"]),
                    metrics=metrics[metrics["run_id"].isin(mine["run_id"])] if len(mine) else EMPTY_METRICS,
                    selection=chosen,
                )
            )
        )

    title = f"normlab study: batch normalization, measured ({name})"
    all_runs = (
        pd.concat([f for f in (runs, select) if len(f)], ignore_index=True)
        if len(runs) or len(select)
        else pd.DataFrame(columns=["run_id"])
    )
    summary = f"What BN computes: {BN_TEXT} (Part 7 shows it on a trained layer.) {PROTOCOL}{METHODS}"
    report = adjust_report(Report(title, summary, sections, provenance_lines(store, used, all_runs)))
    if skipped := [p for p in PARTS if p not in parts]:
        report.sections.append(not_run_section(skipped, full_tier_name(name)))
    for part, section in zip(parts, report.sections):  # after the adjustment: the final labels
        attach_literature(section, part.LITERATURE)
        if hasattr(part, "synthesis") and section.findings:  # a part's verdict composed of its claims'
            section.measured[-1] = part.synthesis(section)
    return report


def not_run_section(parts: list, full_name: str) -> Section:
    """The parts of the full tier, listed (by their titles) in a default-tier report with the
    command that runs them: a reader sees what was not measured instead of nothing."""
    titles = [str(read_spec(part).get("title", part.KEY)) for part in parts]
    return Section(
        "Not run in this tier",
        f"These parts are in the study's full tier and were not run here: {'; '.join(titles)}. "
        f"`{FULL_TIER_COMMAND}` runs every part (at most 30 minutes on a 2-core CPU; the default tier's runs "
        f"are reused, not trained again), and `normlab report {full_name}` rebuilds its report.",
    )


def write_study_report(out_dir: str | Path, name: str) -> Path:
    """Write the report of the study `name` from the store in `out_dir`.

    Returns `<out_dir>/reports/<name>/` (report.html, report.md, one PNG per figure).
    """
    out = Path(out_dir)
    with Store.open(out, create=False) as store:
        if not is_study(store, name):
            known = store.experiments()
            raise StoreError(
                f"no study {name!r} in {str(out)!r}; known experiments: "
                f"{', '.join(known) if known else 'none yet'} (run `normlab study` first)"
            )
        report = study_report(store, name)
    return write_files(report, safe_dir(out, "reports", name))  # no planted link followed
