"""Every part's file is package data and validates; the default keeps the protocol's promises
(7-point lr grid, 2 selection seeds distinct from 10 evaluation seeds); --quick is smaller."""

import pytest

from normlab.experiments.errors import ConfigError
from normlab.study import protocol as P
from normlab.study import registry


def _runs(part, quick=False):
    spec = registry.load_part(part, quick=quick)
    proto = registry.protocol_for(quick)
    chosen = {v.label: P.Selection(v.label, None, spec.lr_grid[0], False) for v in spec.tuned()}
    return spec, P.selection_runs(spec, proto), P.evaluation_runs(spec, proto, chosen)


@pytest.mark.parametrize("part", registry.PARTS, ids=lambda p: p.KEY)
def test_every_part_file_validates_and_keeps_the_protocol(part):
    spec, select, evaluate = _runs(part)
    assert registry.config_text(part).startswith("# normlab study, part")
    grid = tuple((registry.read_spec(part).get("tune") or {}).get("lr") or P.ADAM_LR_GRID)  # a part's own, or Adam's
    assert spec.lr_grid == grid
    assert {r.config.seed for r in select} == (
        set(P.SELECTION_SEEDS) if spec.tuned() else set()
    )  # fixed-only parts tune nothing
    assert {r.config.seed for r in evaluate} == set(range(10))
    assert not set(P.SELECTION_SEEDS) & set(P.EVAL_SEEDS)
    for v in spec.tuned():  # every tuned variant over the whole grid
        assert {r.config.lr for r in select if r.group == f"{part.KEY}/{v.label}"} == set(grid)
    assert all(r.config.dataset == "mnist1d" and r.config.holdout_fraction > 0 for r in select + evaluate)


@pytest.mark.parametrize("part", registry.PARTS, ids=lambda p: p.KEY)
def test_quick_is_smaller_and_still_runs_the_part(part):
    full = _runs(part)
    quick = _runs(part, quick=True)
    assert (0 < len(quick[1]) < len(full[1]) if full[0].tuned() else not quick[1]) and 0 < len(quick[2]) < len(full[2])
    assert {r.config.seed for r in quick[2]} == {0, 1}


def test_parts_measure_what_they_claim():
    labels = {p.KEY: {v.label: v.config for v in registry.load_part(p).variants} for p in registry.PARTS}
    assert {labels["bn"]["none"].norm, labels["bn"]["batch"].norm} == {"none", "batch"}
    assert labels["bn"]["none @ notebook lr"].lr == 1e-3 and labels["bn"]["none @ notebook lr"].batch_size == 64
    assert labels["bn"]["batch + weight decay"].optim.weight_decay > 0
    assert labels["bn"]["ghost batch 16"].norm == "ghost_batch"
    sizes = {c.batch_size for c in labels["batch_size"].values()}
    assert {4, 16, 64, 256} <= sizes
    depth = {len(c.hidden) for k, c in labels["lr_init"].items() if "depth" in k}
    assert depth == {2, 4, 8, 16}
    ioffe = labels["ioffe2015"]["batch"]
    assert ioffe.hidden == [100, 100, 100] and ioffe.activation == "sigmoid" and ioffe.probes.activations
    noniid = labels["noniid"]
    assert noniid["batch, 8 classes"].classes_per_batch == 8 and noniid["batch, 2 classes"].batching == "class_grouped"
    # a run shared by parts is the same config, trained once: part 1's runs serve parts 3 and 4
    assert labels["bn"]["batch"].run_id == labels["lr_init"]["batch"].run_id == labels["costs"]["batch"].run_id
    assert labels["batch_size"]["batch bs 4"].run_id == labels["costs"]["batch bs 4"].run_id


def test_study_names():
    assert registry.study_name() == "study" and registry.study_name(quick=True) == "study-quick"
    assert registry.study_name("cifar10") == "study-cifar10"
    assert registry.study_name(tier="full") == "study-full"
    assert registry.study_name("cifar10", quick=True, tier="full") == "study-quick-full-cifar10"
    for dataset in ("mnist1d", "cifar10"):
        for quick in (False, True):
            for tier in registry.TIERS:
                assert registry.tier_of_study(registry.study_name(dataset, quick, tier)) == tier
            name = registry.study_name(dataset, quick)
            assert registry.full_tier_name(name) == registry.study_name(dataset, quick, "full")


def test_tiers_select_parts(monkeypatch):
    assert registry.parts_for("full") == registry.PARTS
    default = registry.parts_for("default")
    assert all(registry.tier_of(p) == "default" for p in default)
    assert [p for p in registry.PARTS if p not in default] == [
        p for p in registry.PARTS if registry.tier_of(p) == "full"
    ]
    monkeypatch.setattr(registry.PARTS[-1], "TIER", "full", raising=False)
    assert registry.PARTS[-1] not in registry.parts_for("default")
    with pytest.raises(ConfigError, match="--tier: expected one of default, full, got 'all'"):
        registry.parts_for("all")
    with pytest.raises(ConfigError, match="--tier"):
        registry.study_name(tier="everything")
    spec = registry.load_part(registry.PARTS[0], dataset="synthetic")
    assert all(v.config.dataset == "synthetic" for v in spec.variants)


def test_unknown_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="dataset"):
        registry.load_part(registry.PARTS[0], dataset="no_such_data")
