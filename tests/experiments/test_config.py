"""Experiment files, overrides and sweep expansion; every bad input is one ConfigError naming the key."""

from __future__ import annotations

import pytest

from normlab.experiments.config import (
    ConfigError,
    Experiment,
    RunConfig,
    expand,
    load_experiment,
    parse_overrides,
)
from normlab.train.config import RunConfig as TrainRunConfig


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_run_config_is_the_train_contract():
    assert RunConfig is TrainRunConfig


def test_no_file_no_override_is_one_run_of_the_seed_defaults():
    exp = load_experiment(None, [], name="run")
    assert len(exp.runs) == 1
    config = exp.runs[0].config
    assert (config.model, config.optimizer, config.lr, config.batch_size, config.dataset) == (
        "mlp",
        "adam",
        1e-3,
        64,
        "mnist1d",
    )
    assert config == RunConfig()


def test_overrides_parse_types_dotted_keys_and_comma_sweeps():
    parsed = parse_overrides(
        [
            "batch_size=16,32",
            "lr=0.01",
            "optim.weight_decay=1e-4",
            "augment=true",
            "hidden=[64,64],[32]",
            "max_steps=none",
            "norm_kwargs.num_groups=4",
        ]
    )
    assert parsed["batch_size"] == [16, 32]
    assert parsed["lr"] == [0.01]
    assert parsed["augment"] == [True]
    assert parsed["hidden"] == [[64, 64], [32]]  # commas inside brackets do not split
    assert parsed["max_steps"] == [None]  # 'none' is None where the field allows None
    assert parsed["norm_kwargs.num_groups"] == [4]


def test_override_commas_inside_quotes_do_not_split_and_text_keys_stay_text():
    parsed = parse_overrides(['data_root="/data/a,b"', "norm=none,'batch'", "dataset=2024", "norm_kwargs.affine=off"])
    assert parsed["data_root"] == ["/data/a,b"]  # one folder, not a sweep of two halves
    assert parsed["norm"] == ["none", "batch"]
    assert parsed["dataset"] == ["2024"]  # a name, not the integer YAML reads
    assert parsed["norm_kwargs.affine"] == [False]  # free keys are still read as YAML
    assert parse_overrides(["data_root=it's,x"])["data_root"] == ["it's", "x"]


def test_a_group_filling_a_base_dict_does_not_leak_into_other_groups():
    exp = expand(
        {
            "norm_kwargs": {},
            "groups": {"g": [{"norm": "group", "norm_kwargs.num_groups": [2, 4]}], "h": [{"norm": "batch"}]},
        }
    )
    assert [(r.group, r.config.norm_kwargs) for r in exp.runs] == [
        ("g", {"num_groups": 2}),
        ("g", {"num_groups": 4}),
        ("h", {}),
    ]


def test_sweep_without_file_is_the_grid_of_overrides():
    exp = load_experiment(None, ["norm=none,batch", "seed=0,1,2", "optim.weight_decay=1e-4"])
    assert exp.name == "sweep"
    assert len(exp.runs) == 6
    assert {(r.config.norm, r.config.seed) for r in exp.runs} == {(n, s) for n in ("none", "batch") for s in (0, 1, 2)}
    assert all(r.config.optim.weight_decay == 1e-4 for r in exp.runs)
    assert len({r.run_id for r in exp.runs}) == 6


YAML = """
name: demo
description: a demo
epochs: 2
optim:
  weight_decay: 0.01
schedule.name: cosine
sweep:
  seed: [0, 1]
groups:
  base:
    - norm: [none, batch]
  small:
    - norm: [batch, group]
      batch_size: [2, 4]
    - norm: ghost_batch
      norm_kwargs.virtual_batch_size: 2
      batch_size: 8
"""


def test_yaml_file_with_groups_expands_per_group(tmp_path):
    exp = load_experiment(write(tmp_path, "demo.yaml", YAML))
    assert exp.name == "demo" and exp.description == "a demo"
    assert exp.groups == ["base", "small"]
    base = [r for r in exp.runs if r.group == "base"]
    small = [r for r in exp.runs if r.group == "small"]
    assert len(base) == 2 * 2  # norm x seed
    assert len(small) == 2 * 2 * 2 + 2  # norm x batch x seed, + ghost x seed
    ghost = [r.config for r in small if r.config.norm == "ghost_batch"]
    assert [c.norm_kwargs for c in ghost] == [{"virtual_batch_size": 2}] * 2
    assert all(r.config.epochs == 2 and r.config.optim.weight_decay == 0.01 for r in exp.runs)
    assert all(r.config.schedule.name == "cosine" for r in exp.runs)


def test_overrides_win_over_the_file_and_a_comma_list_sweeps_every_group(tmp_path):
    path = write(tmp_path, "demo.yaml", YAML)
    exp = load_experiment(path, ["batch_size=16,32", "seed=5", "epochs=1"])
    assert {r.config.seed for r in exp.runs} == {5}
    assert {r.config.batch_size for r in exp.runs} == {16, 32}
    assert {r.config.epochs for r in exp.runs} == {1}
    # base: 2 norms x 2 batch sizes; small: (2 norms + ghost) x 2 batch sizes
    assert len(exp.runs) == 4 + 6


def test_toml_file_equals_the_yaml_one(tmp_path):
    toml = write(
        tmp_path, "t.toml", 'name = "t"\nepochs = 2\n[optim]\nmomentum = 0.5\n[sweep]\nnorm = ["none", "batch"]\n'
    )
    yaml_ = write(tmp_path, "t.yaml", "name: t\nepochs: 2\noptim: {momentum: 0.5}\nsweep: {norm: [none, batch]}\n")
    assert [r.run_id for r in load_experiment(toml).runs] == [r.run_id for r in load_experiment(yaml_).runs]


def test_list_valued_keys_sweep_as_lists_of_lists(tmp_path):
    path = write(tmp_path, "h.yaml", "hidden: [32, 16]\nsweep:\n  optim.betas: [[0.9, 0.99], [0.5, 0.9]]\n")
    exp = load_experiment(path)
    assert [r.config.hidden for r in exp.runs] == [[32, 16], [32, 16]]
    assert [r.config.optim.betas for r in exp.runs] == [(0.9, 0.99), (0.5, 0.9)]


def test_name_defaults_to_the_file_stem_and_duplicates_are_dropped(tmp_path):
    exp = load_experiment(write(tmp_path, "my_exp.yaml", "sweep:\n  seed: [0, 0, 1]\n"))
    assert exp.name == "my_exp"
    assert len(exp.runs) == 2


# --- bad input: one ConfigError that names the key ------------------------------------------


@pytest.mark.parametrize(
    "overrides, must_contain",
    [
        (["nrom=batch"], ["`nrom`", "did you mean `norm`"]),
        (["batch_sise=3"], ["`batch_sise`", "`batch_size`"]),
        (["optim.weight_decai=0.1"], ["`optim.weight_decai`", "`optim.weight_decay`"]),
        (["optim=1"], ["`optim` is a section"]),
        (["lr.x=1"], ["`lr.x`", "no sub-keys"]),
        (["batch_size=abc"], ["`batch_size`", "integer", "'abc'"]),
        (["batch_size=0"], ["`batch_size`", "greater than or equal to 1", "got 0"]),
        (["lr=-1"], ["`lr`", "greater than 0"]),
        (["optim.momentum=1.5"], ["`optim.momentum`", "less than 1"]),
        (["optimizer=sgdd"], ["`optimizer`", "'sgd'", "got 'sgdd'"]),
        (["norm=batchnorm"], ["`norm`", "unknown norm 'batchnorm'", "ghost_batch"]),
        (["model=resnet21"], ["`model`", "unknown model", "resnet20"]),
        (["dataset=cifar11"], ["`dataset`", "unknown dataset", "cifar10"]),
        (["norm=batch", "norm_kwargs.num_groups=4"], ["`norm_kwargs.num_groups`", "'batch' takes no argument"]),
        (["sync_bn=true"], ["sync_bn=true needs nproc > 1"]),
        (["batch_size"], ["expected key=value"]),
        (["batch_size=16,,32"], ["empty value"]),
    ],
)
def test_bad_overrides_are_one_clear_error(overrides, must_contain):
    with pytest.raises(ConfigError) as info:
        load_experiment(None, overrides)
    message = str(info.value)
    assert "\n" not in message
    for text in must_contain:
        assert text in message, message


@pytest.mark.parametrize(
    "text, must_contain",
    [
        ("epochz: 3\n", ["unknown key `epochz`", "`epochs`"]),
        ("sweep:\n  norm: batch\n", ["`norm`", "needs a list"]),
        ("sweep:\n  seed: []\n", ["`seed`", "empty list"]),
        ("sweep: [1, 2]\n", ["`sweep`", "mapping"]),
        ("groups:\n  a: 3\n", ["groups.a", "list of mappings"]),
        ("groups:\n  a: []\n  b:\n    - seed: 1\n", ["groups.a", "non-empty list", "remove the group"]),
        ("groups:\n  a:\n    - nrom: [none]\n", ["groups.a", "`nrom`", "`norm`"]),
        ("groups:\n  a:\n    - batch_size: [4, -1]\n", ["groups.a", "`batch_size`", "got -1"]),
        ("- 1\n- 2\n", ["expected a mapping"]),
        ("epochs: [1\n", ["not valid YAML"]),
        ("seed: [0, 1]\n", ["`seed`", "sweeps only under `sweep:`"]),
    ],
)
def test_bad_files_are_one_clear_error_naming_the_file_and_key(tmp_path, text, must_contain):
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    message = str(info.value)
    assert str(path) in message
    for item in must_contain:
        assert item in message, message


def test_missing_file_and_wrong_extension(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"\.yaml, \.yml or \.toml"):
        load_experiment(write(tmp_path, "x.json", "{}"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_experiment(write(tmp_path, "x.toml", "a = = 1"))


def test_experiment_needs_a_name():
    with pytest.raises(ConfigError, match="experiment name"):
        Experiment(name=" ", runs=[])


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", ".hidden", "x" * 101, "tab\tname", "é", "."])
def test_an_experiment_name_is_one_safe_character_set(name):
    with pytest.raises(ConfigError, match="only letters, digits, '.', '_' and '-'"):
        Experiment(name=name, runs=[])
    with pytest.raises(ConfigError, match="experiment name"):
        load_experiment(None, ["seed=0"], name=name)
    assert Experiment(name="study.bn_2-x", runs=[]).name == "study.bn_2-x"


def test_expand_takes_a_dict_spec():
    exp = expand({"name": "d", "sweep": {"seed": [0, 1]}}, {"epochs": [3]})
    assert [r.config.epochs for r in exp.runs] == [3, 3]
