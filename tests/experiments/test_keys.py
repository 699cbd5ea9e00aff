"""Keys and values of a run config: key lookup, suggestions, one validated RunConfig."""

from __future__ import annotations

import pytest

from normlab.experiments.errors import ConfigError
from normlab.experiments.keys import (
    build_config,
    check_key,
    config_keys,
    flatten,
    is_sequence_key,
    none_allowed,
    suggest,
)
from normlab.train.config import RunConfig


def test_config_keys_are_every_field_dotted_for_sections():
    keys = config_keys()
    assert "norm" in keys and "optim.weight_decay" in keys and "probes.every_steps" in keys
    assert "optim" not in keys  # a section is not a value
    top = [k for k in keys if "." not in k]
    sections = {k.split(".")[0] for k in keys if "." in k}
    assert set(top) | sections == set(RunConfig.model_fields)


def test_check_key_accepts_valid_and_free_keys():
    for key in ("lr", "optim.betas", "schedule.name", "norm_kwargs.anything"):
        check_key(key)


@pytest.mark.parametrize(
    "key, text",
    [
        ("lrr", "did you mean `lr`"),
        ("optim.wieght_decay", "did you mean `optim.weight_decay`"),
        ("schedule", "is a section"),
        ("seed.x", "no sub-keys"),
        ("zzzzzz", "unknown key `zzzzzz`"),
    ],
)
def test_check_key_errors_name_the_key(key, text):
    with pytest.raises(ConfigError, match=text):
        check_key(key, where="file.yaml: ")
    with pytest.raises(ConfigError, match="^file.yaml: "):
        check_key(key, where="file.yaml: ")


def test_flatten_turns_sections_into_dotted_keys_and_keeps_lists():
    flat = flatten({"optim": {"weight_decay": 0.1}, "norm_kwargs": {"num_groups": 4}, "hidden": [8, 8]})
    assert flat == {"optim.weight_decay": 0.1, "norm_kwargs.num_groups": 4, "hidden": [8, 8]}
    with pytest.raises(ConfigError, match="keys must be strings"):
        flatten({1: 2})


def test_key_kinds():
    assert is_sequence_key("hidden") and is_sequence_key("optim.betas")
    assert not is_sequence_key("seed") and not is_sequence_key("norm_kwargs.num_groups")
    assert none_allowed("max_steps") and none_allowed("optim.grad_clip")
    assert not none_allowed("data_root")  # a str: 'none' could be a folder name
    assert not none_allowed("seed")


def test_build_config_equals_the_pydantic_model():
    config = build_config({"norm": "group", "optim.weight_decay": 0.5, "norm_kwargs.num_groups": 4})
    assert config == RunConfig(norm="group", optim={"weight_decay": 0.5}, norm_kwargs={"num_groups": 4})


@pytest.mark.parametrize(
    "flat, text",
    [
        ({"epochs": 0}, "`epochs`: input should be greater than or equal to 1, got 0"),
        ({"optim.betas": [0.9]}, "`optim.betas`"),
        ({"activation": "tanh"}, "`activation`: input should be 'relu', 'sigmoid' or 'gelu', got 'tanh'"),
        ({"norm": "btach"}, "did you mean `batch`"),
        ({"norm": "group", "norm_kwargs.num_grups": 2}, "did you mean `num_groups`"),
    ],
)
def test_build_config_errors(flat, text):
    with pytest.raises(ConfigError) as info:
        build_config(flat)
    assert text in str(info.value)


def test_suggest():
    assert suggest("batchsize", ["batch_size", "seed"]) == "; did you mean `batch_size`?"
    assert suggest("qqq", ["batch_size"]) == ""
