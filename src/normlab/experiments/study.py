"""`normlab study`: the seed notebook's batch-norm study, as six experiments, then the report.

Each part is an experiment file in `configs/study_<n>_<key>.yaml` run through
`run_experiment`, so the study stores, resumes and skips finished runs like any sweep:

    1 bn          with vs without BN: the seed's MLP, batch size 64, several seeds
    2 batch_size  32/64/128 with and without BN; small batches with GN/LN/BRN/Ghost BN
    3 lr_init     learning-rate range test; badly scaled initialization
    4 costs       time per step per norm; train-mode vs eval-mode gap; recalibrate_bn
    5 ioffe2015   Ioffe & Szegedy (2015) Fig. 1: 3x100 sigmoid MLP, a unit's input percentiles
    6 noniid      class-grouped (non-i.i.d.) batches, Ioffe (2017) Fig. 3; Batch Renorm

A study named S stores its parts as experiments "S.bn", "S.batch_size", ...; S is "study"
(plus "-quick" for `--quick`, plus "-<dataset>" off MNIST-1D), so a quick smoke test never
mixes its runs into the full study's statistics. `--quick` runs fewer seeds, steps and groups
(the QUICK table below) to finish in about a minute.

After the runs, BN runs of the parts that measure consistency get one extra number, the test
accuracy after `normlab.layers.recalibrate_bn` (stored as the metric `recal_test_acc`), and
`normlab.analysis.report.write_report` writes the report.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normlab.experiments.config import Experiment, expand, parse_overrides, read_experiment_file
from normlab.experiments.errors import ConfigError

__all__ = ["Part", "PARTS", "QUICK", "CONFIG_DIR", "study_name", "part_experiment", "run_study", "recalibrate_runs"]

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"
"""The shipped experiment files (the repository's `configs/`)."""

RECAL_METRIC = "recal_test_acc"  # = normlab.analysis.parts.RECAL_TEST_ACC (analysis sits above)
RECAL_BATCH_SIZE = 256  # i.i.d. batches used to re-estimate the running statistics
RECAL_NORMS = ("batch", "batch_renorm", "ghost_batch")


@dataclass(frozen=True)
class Part:
    """One part of the study: its key (experiment suffix), file and title."""

    key: str
    file: str
    title: str
    recalibrate: bool = False  # measure recalibrate_bn on its BN runs


PARTS: tuple[Part, ...] = (
    Part("bn", "study_1_bn.yaml", "With vs without BN"),
    Part("batch_size", "study_2_batch_size.yaml", "Batch size and small batches"),
    Part("lr_init", "study_3_lr_init.yaml", "Learning rate and initialization"),
    Part("costs", "study_4_costs.yaml", "Costs and train/inference consistency", recalibrate=True),
    Part("ioffe2015", "study_5_ioffe2015.yaml", "Ioffe & Szegedy 2015, Fig. 1"),
    Part("noniid", "study_6_noniid.yaml", "Non-i.i.d. batches", recalibrate=True),
)


@dataclass(frozen=True)
class Quick:
    """How `--quick` shrinks a part: top-level spec keys replaced, then `key=value` overrides."""

    replace: dict[str, Any] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()


QUICK: dict[str, Quick] = {
    "bn": Quick(overrides=("seed=0,1", "epochs=2")),
    "batch_size": Quick(
        replace={"groups": {"standard": [{"norm": ["none", "batch"], "batch_size": [64]}],
                            "small": [{"norm": ["none", "batch", "group"], "batch_size": [4]}]}},
        overrides=("seed=0,1", "epochs=1", "max_steps=60"),
    ),
    "lr_init": Quick(
        replace={"groups": {"lr_range": [{"lr": 1.0e-5, "epochs": 5, "batch_size": 128,
                                          "schedule.name": "exponential", "holdout_fraction": 0.0}]}},
        overrides=("seed=0,1",),
    ),
    "costs": Quick(
        replace={"groups": {"gap": [{"norm": ["none", "batch"], "batch_size": [8], "epochs": 1}]}},
        overrides=("seed=0,1", "max_steps=100"),
    ),
    "ioffe2015": Quick(overrides=("seed=0,1", "epochs=2")),
    "noniid": Quick(overrides=("seed=0,1", "epochs=1", "norm=batch")),
}


def study_name(dataset: str = "mnist1d", quick: bool = False) -> str:
    """"study", "study-quick", "study-cifar10", "study-quick-cifar10"."""
    name = "study-quick" if quick else "study"
    return name if dataset == "mnist1d" else f"{name}-{dataset}"


def part_experiment(part: Part, dataset: str = "mnist1d", quick: bool = False,
                    config_dir: str | Path | None = None) -> Experiment:
    """The validated Experiment of one part (quick-shrunk if asked), on `dataset`."""
    path = Path(config_dir or CONFIG_DIR) / part.file
    spec = read_experiment_file(path)
    overrides = [f"dataset={dataset}"]
    if quick:
        q = QUICK.get(part.key, Quick())
        spec = {**copy.deepcopy(spec), **copy.deepcopy(q.replace)}
        overrides += list(q.overrides)
    name = f"{study_name(dataset, quick)}.{part.key}"
    return expand(spec, parse_overrides(overrides), name=name, where=f"{path}: ")


def _checkpoint_model(out_dir: Path, run_id: str, config, dataset):
    """The trained model of a finished run, rebuilt from its config and checkpoint."""
    import torch

    from normlab.models import build_model
    from normlab.train.checkpoint import load_checkpoint
    from normlab.train.engine import model_norm_kwargs

    path = out_dir / "runs" / run_id / "checkpoint.pt"
    if not path.exists():
        return None
    state = load_checkpoint(path, run_id)
    model = build_model(
        config.model, dataset.input_shape, dataset.num_classes, norm=config.norm,
        norm_kwargs=model_norm_kwargs(config), norm_position=config.norm_position,
        activation=config.activation, hidden=config.hidden, init_scale=config.init_scale,
    )
    model.load_state_dict(state["model"])
    return model.to(torch.device("cpu")), int(state["step"]), int(state["epoch"])


def recalibrate_runs(experiment: Experiment, out_dir: str | Path) -> int:
    """For each finished BN-family run of `experiment`: re-estimate the running statistics
    with `recalibrate_bn` on i.i.d. training batches, evaluate on the test split in eval mode
    and store `recal_test_acc` at the run's last step. Runs that already have it are skipped.
    Returns the number of runs measured.
    """
    import torch

    from normlab.data import BatchLoader, load_dataset
    from normlab.experiments.store import Store
    try:
        from normlab.layers import recalibrate_bn
    except ImportError:  # the layers package without its surgery module: nothing to measure
        return 0
    from normlab.train.engine import split_holdout
    from normlab.train.evaluate import accuracy_and_loss

    out = Path(out_dir)
    runs = {r.run_id: r.config for r in experiment.runs if r.config.norm in RECAL_NORMS}
    if not runs:
        return 0
    measured = 0
    with Store.open(out) as store:
        status = store.run_status(list(runs))
        done = set(store.metrics_frame(experiment.name, names=[RECAL_METRIC])["run_id"])
        datasets: dict[tuple, Any] = {}
        for run_id, config in runs.items():
            if status.get(run_id) != "finished" or run_id in done:
                continue
            key = (config.dataset, config.data_root)
            if key not in datasets:
                datasets[key] = load_dataset(config.dataset, root=config.data_root)
            data = datasets[key]
            loaded = _checkpoint_model(out, run_id, config, data)
            if loaded is None:
                continue
            model, step, epoch = loaded
            train_idx, _ = split_holdout(len(data.train_y), config.holdout_fraction)
            stats = dict(mean=data.mean, std=data.std)
            batches = BatchLoader(data.train_x[train_idx], data.train_y[train_idx], RECAL_BATCH_SIZE,
                                  shuffle=True, drop_last=True, seed=config.seed, **stats)
            recalibrate_bn(model, (x for x, _ in batches))
            test = BatchLoader(data.test_x, data.test_y, 1000, shuffle=False, drop_last=False, **stats)
            with torch.no_grad():
                acc, _ = accuracy_and_loss(model, test)
            store.add_metrics(run_id, [(step, epoch, RECAL_METRIC, acc)])
            measured += 1
    return measured


def _check_data(dataset: str) -> None:
    """Load the dataset once up front: missing data is one clear error, not 138 failed runs."""
    from normlab.data import load_dataset

    try:
        load_dataset(dataset)
    except ValueError as exc:  # DatasetError: missing/corrupt files, with what to do about it
        raise ConfigError(f"--dataset {dataset}: {exc}") from None


def run_study(
    dataset: str = "mnist1d",
    quick: bool = False,
    out: str | Path = "runs",
    backend: str = "local",
    workers: int = 1,
) -> Path:
    """Run every part of the study through `run_experiment`, then write the report.

    Args:
        dataset: a registered dataset name; MNIST-1D (embedded, offline) by default.
        quick: the smoke-test study (fewer seeds, steps and groups; about a minute on CPU).
        out: the results folder (store, checkpoints, reports); reruns skip finished runs.
        backend, workers: as for `normlab sweep` ("local", "process", "ray").

    Returns:
        The report folder (`<out>/reports/<study name>/` with report.html, report.md, PNGs).

    Example:
        >>> report_dir = run_study(quick=True, out="runs")
        >>> (report_dir / "report.html").exists()
        True
    """
    import torch

    from normlab.experiments.runner import run_experiment

    if not isinstance(dataset, str) or not dataset:
        raise ConfigError(f"--dataset: expected a dataset name such as 'mnist1d', got {dataset!r}")
    # The study trains many small MLPs: one thread each is faster than two fighting over a
    # 2-core CPU (measured: ~6 ms vs ~30+ ms per step under load); the runs stay deterministic.
    experiments = [part_experiment(part, dataset, quick) for part in PARTS]  # validate all first
    _check_data(dataset)
    threads = torch.get_num_threads()
    if backend == "local":
        torch.set_num_threads(1)
    try:
        for part, experiment in zip(PARTS, experiments):
            summary = run_experiment(experiment, out, backend=backend, workers=workers)
            print(summary)
            if part.recalibrate:
                recalibrate_runs(experiment, out)
    finally:
        torch.set_num_threads(threads)
    # analysis sits above experiments: imported here, at the one place the study needs it
    from normlab.analysis.report import write_report

    return write_report(out, study_name(dataset, quick))
