"""`run_study`: both stages of every part through `run_experiment`, recalibration, the report.

The study named S stores its runs as two experiments: "S.select" (stage 1 of every part: the
tuned variants over the lr grid, selection seeds) and "S.eval" (stage 2: every variant at its
lr, evaluation seeds); a run's group is "<part>/<variant>". S is "study" (plus "-quick" for
`--quick`, "-full" for the full tier, "-<dataset>" off MNIST-1D), so a smoke test never mixes
into the study and each tier's report adjusts p over its own claims.
A run shared by several parts (same config) is trained once.
"""

from __future__ import annotations

from pathlib import Path

from normlab._deprecated import renamed_argument
from normlab.experiments import runner
from normlab.experiments.config import Experiment
from normlab.experiments.errors import ConfigError
from normlab.experiments.store import Store
from normlab.study import report
from normlab.study.mechanisms import measure_mechanisms
from normlab.study.protocol import (
    evaluation_runs,
    group_name,
    selection_runs,
    stored_selection,
)
from normlab.study.recalibrate import recalibrate_runs
from normlab.study.registry import load_part, parts_for, protocol_for, study_name
from normlab.study.timing import time_steps

__all__ = ["run_study", "MECHANISM_PARTS"]

MECHANISM_PARTS = ("anatomy", "ics")
"""Parts whose finished evaluation runs are probed after training (`measure_mechanisms`: ICS,
the loss landscape, the anatomy of a trained BN layer)."""


def _check_data(dataset: str) -> None:
    """Load the dataset once up front: missing data is one clear error, not 900 failed runs."""
    from normlab.data import load_dataset

    try:
        load_dataset(dataset)
    except ValueError as exc:  # DatasetError: missing/corrupt files, with what to do about it
        raise ConfigError(f"--dataset {dataset}: {exc}") from None


def run_study(
    dataset: str = "mnist1d",
    quick: bool = False,
    out: str | Path = "runs",
    executor: str = "process",
    workers: int = 2,
    tier: str = "default",
    *,
    backend: str | None = None,
) -> Path:
    """Run every part of the study (both stages), recalibrate, then write the report.

    Args:
        dataset: a registered dataset name; MNIST-1D (embedded, offline) by default.
        quick: the smoke-test study (3 lrs, 1 selection seed, 2 evaluation seeds, a few steps).
        out: the results folder (store, checkpoints, reports); reruns skip finished runs.
        executor, workers: as for `normlab sweep`; default two worker processes, one torch
            thread each (both cores of a 2-core CPU).
        tier: "default" (the default parts) or "full" (every part, as the study "study-full";
            runs the default tier stored already are reused).
        backend: the deprecated name of `executor`; warns.

    Returns:
        The report folder (`<out>/reports/<study name>/` with report.html, report.md, PNGs).

    After the runs: `recalibrate_bn` on the BN runs of the parts that list them, and the
    mechanism probes (`measure_mechanisms`) on the runs of parts 7 and 8.

    Example:
        >>> report_dir = run_study(quick=True, out="runs")
        >>> (report_dir / "report.html").exists()
        True
    """
    executor = renamed_argument("backend", backend, "executor", executor, default="process", where="run_study")
    if not isinstance(dataset, str) or not dataset:
        raise ConfigError(f"--dataset: expected a dataset name such as 'mnist1d', got {dataset!r}")
    name = study_name(dataset, quick, tier)
    protocol = protocol_for(quick)
    specs = [load_part(part, dataset, quick) for part in parts_for(tier)]  # validate every file first
    _check_data(dataset)

    select = Experiment(
        f"{name}.select",
        [r for s in specs for r in selection_runs(s, protocol)],
        description="normlab study, stage 1: each variant over the lr grid (selection seeds)",
    )
    print(runner.run_experiment(select, out, executor=executor, workers=workers))
    with Store.open(out) as store:
        chosen = stored_selection(store, name)
    evaluate = Experiment(
        f"{name}.eval",
        [r for s in specs for r in evaluation_runs(s, protocol, chosen.get(s.key, {}))],
        description="normlab study, stage 2: each variant at its selected lr (evaluation seeds)",
    )
    print(runner.run_experiment(evaluate, out, executor=executor, workers=workers))

    recal = {
        run.run_id: run.config
        for s in specs
        for run in evaluate.runs
        if run.group in {group_name(s.key, label) for label in s.recalibrate}
    }
    recalibrate_runs(evaluate.name, recal, out)
    timed = {run.run_id: run.config for run in evaluate.runs if run.group.endswith(", timing")}
    time_steps(evaluate.name, timed, out)  # now that no worker shares the CPU
    # ICS and the landscape need every layer trainable: BN-only / random-subset runs are not probed
    probed = {
        run.run_id: run.config
        for s in specs
        if s.key in MECHANISM_PARTS
        for run in evaluate.runs
        if run.group.startswith(f"{s.key}/") and run.config.trainable == "all"
    }
    traced = {run.run_id for run in evaluate.runs if run.group.startswith("ics/")}  # ICS over training
    measure_mechanisms(evaluate.name, probed, out, traced)
    return report.write_study_report(out, name)
