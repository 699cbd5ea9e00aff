"""create_norm builds every registered name; every norm takes every rank; clear errors."""

from __future__ import annotations

import functools

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
from normlab.layers.noisy import NoisyBatchNorm

EXPECTED = {
    "none": nn.Identity,
    "batch": BatchNorm,
    "ghost_batch": GhostBatchNorm,
    "batch_renorm": BatchRenorm,
    "group": GroupNorm,
    "layer": LayerNorm,
    "instance": InstanceNorm,
    "rms": RMSNorm,
    "noisy_batch": NoisyBatchNorm,
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
    assert create_norm("batch", 8, momentum=None, impl="reference").momentum is None
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


@pytest.fixture
def registry(monkeypatch):
    """The registry module with a private copy of the name table: registrations end with the
    test."""
    from normlab.layers import registry

    monkeypatch.setattr(registry, "_NORMS", dict(registry._NORMS))
    return registry


class ScaledNorm(nn.Module):
    """A user's norm: x / rms(x) * g, per sample."""

    def __init__(self, num_features, eps=1e-6):
        super().__init__()
        self.g = nn.Parameter(torch.ones(num_features))
        self.eps = eps

    def forward(self, x):
        dims = tuple(range(1, x.dim()))
        rms = x.square().mean(dims, keepdim=True).add(self.eps).sqrt()
        return x / rms * self.g.view(1, -1, *[1] * (x.dim() - 2))


def test_create_norm_takes_a_class_a_partial_or_a_callable():
    assert isinstance(create_norm(ScaledNorm, 8, eps=1e-3), ScaledNorm)
    group = create_norm(functools.partial(nn.GroupNorm, 2), 8)
    assert isinstance(group, nn.GroupNorm) and group.num_groups == 2
    assert isinstance(create_norm(lambda c: nn.LayerNorm(c), 8), nn.LayerNorm)
    with pytest.raises(ValueError, match="'ScaledNorm' does not accept argument.*momentum"):
        create_norm(ScaledNorm, 8, momentum=0.1)


def test_register_norm_reaches_models_and_configs(registry):
    from normlab.experiments.errors import ConfigError
    from normlab.experiments.keys import build_config
    from normlab.models import build_model

    with pytest.raises(ConfigError, match="unknown norm 'scaled'"):
        build_config({"norm": "scaled"})
    registry.register_norm("Scaled", ScaledNorm)
    assert norm_names()[-1] == "scaled" and norm_kwargs("scaled") == ["eps"]
    assert isinstance(create_norm("SCALED", 8, eps=1e-3), ScaledNorm)
    assert build_config({"norm": "scaled"}).norm == "scaled"
    model = build_model("mlp", input_shape=(1, 40), num_classes=10, hidden=[16], norm="scaled")
    assert any(isinstance(m, ScaledNorm) for m in model.modules())


def test_register_norm_errors(registry):
    with pytest.raises(ValueError, match="'batch' is a built-in norm"):
        registry.register_norm("batch", ScaledNorm)
    registry.register_norm("scaled", ScaledNorm)
    with pytest.raises(ValueError, match="registered already.*replace=True"):
        registry.register_norm("scaled", ScaledNorm)
    registry.register_norm("scaled", functools.partial(ScaledNorm, eps=1e-3), replace=True)
    assert create_norm("scaled", 4).eps == 1e-3
    with pytest.raises(ValueError, match="letters, digits"):
        registry.register_norm("my norm", ScaledNorm)
    with pytest.raises(TypeError, match="class or callable"):
        registry.register_norm("mine", "ScaledNorm")


def test_a_factory_with_var_keywords_takes_any_keyword(registry):
    def factory(num_features, *args, eps=1e-5, **kwargs):
        return nn.GroupNorm(kwargs.get("groups", 1), num_features, eps=eps)

    registry.register_norm("any_kw", factory)
    assert norm_kwargs("any_kw") == ["eps"]
    assert create_norm("any_kw", 8, groups=4).num_groups == 4
