"""create_norm builds every registered name; every norm takes every rank; clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normlab.layers import (
    BatchNorm,
    BatchRenorm,
    GhostBatchNorm,
    GroupNorm,
    InstanceNorm,
    LayerNorm,
    RMSNorm,
    create_norm,
    norm_kwargs,
    norm_names,
)

EXPECTED = {
    "none": nn.Identity,
    "batch": BatchNorm,
    "ghost_batch": GhostBatchNorm,
    "batch_renorm": BatchRenorm,
    "group": GroupNorm,
    "layer": LayerNorm,
    "instance": InstanceNorm,
    "rms": RMSNorm,
}
SHAPES = [(4, 8), (4, 8, 5), (4, 8, 3, 3), (4, 8, 2, 2, 2)]


def test_names():
    assert norm_names() == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_name_builds_and_takes_every_rank(name):
    norm = create_norm(name, 8)
    assert type(norm) is EXPECTED[name]
    for mode in ("train", "eval"):
        norm.train(mode == "train")
        for shape in SHAPES:
            x = torch.randn(shape) * 3 + 1
            if name == "instance" and len(shape) == 2:
                with pytest.raises(ValueError, match="instance norm needs spatial dims"):
                    norm(x)
                continue
            y = norm(x)
            assert y.shape == x.shape
            if name != "none" and mode == "train":  # every norm here standardizes something
                assert y.abs().mean() < x.abs().mean()


def test_kwargs_reach_the_norm():
    assert create_norm("group", 8, num_groups=2).num_groups == 2
    assert create_norm("ghost_batch", 8, virtual_batch_size=16).virtual_batch_size == 16
    assert create_norm("batch", 8, momentum=None, backend="reference").momentum is None
    assert create_norm("batch_renorm", 8, r_max=2.0).r_max == 2.0
    assert create_norm("layer", 8, eps=1e-3).eps == 1e-3
    assert create_norm("BATCH", 8).num_features == 8  # case-insensitive


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        create_norm("btach", 8)
    assert "unknown norm 'btach'" in str(err.value)
    for name in EXPECTED:
        assert name in str(err.value)


def test_unaccepted_kwarg_is_a_clear_error():
    with pytest.raises(ValueError, match=r"norm 'layer' does not accept argument\(s\) num_groups"):
        create_norm("layer", 8, num_groups=2)
    with pytest.raises(ValueError, match="'none' does not accept argument.*no arguments"):
        create_norm("none", 8, eps=1e-3)
    assert "virtual_batch_size" in norm_kwargs("ghost_batch")
