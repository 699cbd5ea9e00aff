"""Every experiment file shipped in configs/ (the study's included) loads and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from normlab.experiments.config import load_experiment

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FILES = sorted(p for p in CONFIGS.iterdir() if p.suffix in (".yaml", ".yml", ".toml")) if CONFIGS.is_dir() else []


def test_the_required_experiments_are_shipped():
    names = {load_experiment(p).name for p in FILES}
    assert {"mnist1d-norm-batch", "cifar10-resnet20-norms"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_shipped_file_validates(path):
    experiment = load_experiment(path)
    assert experiment.runs, f"{path.name} expands to no runs"
    assert experiment.name and experiment.description, f"{path.name}: give it a name and a description"
    if path.name.startswith("study"):
        return  # the study's files: their seeds per part are the study's choice (--quick)
    # seeds are swept so every variant has a spread (n > 1) to report
    variants = {}
    for run in experiment.runs:
        key = (run.group, run.config.model_copy(update={"seed": 0}).run_id)
        variants.setdefault(key, set()).add(run.config.seed)
    assert all(len(seeds) >= 2 for seeds in variants.values()), f"{path.name}: a variant has one seed"


def test_cifar_resnet20_comparison_is_what_it_says():
    exp = load_experiment(CONFIGS / "cifar10_resnet20_norms.yaml")
    configs = [r.config for r in exp.runs]
    assert {c.dataset for c in configs} == {"cifar10"} and {c.model for c in configs} == {"resnet20"}
    assert {"none", "batch", "group", "layer"} <= {c.norm for c in configs}
