"""BN-only training moves only gamma and beta; the random control trains exactly as many
scalars, and only those; both after real optimizer steps, with the optimizers the engine uses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normlab.models.mlp import MLP
from normlab.train import check_optimizer_owns_model
from normlab.train.bn_only import (
    bn_only,
    bn_parameter_names,
    freeze_to,
    random_subset,
    subset_param_groups,
    trainable_subset,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BN_NAMES = ["blocks.0.norm.weight", "blocks.0.norm.bias", "blocks.1.norm.weight", "blocks.1.norm.bias"]


def _model(device, norm="batch"):
    torch.manual_seed(0)
    # sigmoid: no dead unit, so every trained scalar gets a non-zero gradient and moves
    return MLP((1, 12), 4, hidden=[10, 6], norm=norm, activation="sigmoid").to(device, torch.float64)


def _optimizers(params):
    return [
        lambda: torch.optim.SGD(params(0.01), lr=0.1, momentum=0.9, nesterov=True),
        lambda: torch.optim.Adam(params(0.01), lr=0.01, fused=True),
        lambda: torch.optim.AdamW(params(0.1), lr=0.01),
    ]


def _train(model, optimizer, device, steps=5):
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 1, 12, generator=g, dtype=torch.float64).to(device)
        y = torch.randint(0, 4, (16,), generator=g).to(device)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def test_bn_parameter_names():
    assert bn_parameter_names(_model("cpu")) == BN_NAMES
    subset = bn_only(_model("cpu"))
    assert subset.count == 2 * (10 + 6)
    with pytest.raises(ValueError, match="no batch norm layer"):
        bn_only(_model("cpu", norm="none"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("which", [0, 1, 2])
def test_bn_only_leaves_every_other_parameter_bit_identical(device, which):
    model = _model(device)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    subset = bn_only(model)
    freeze_to(model, subset)
    optimizer = _optimizers(lambda wd: subset_param_groups(model, subset, wd))[which]()
    check_optimizer_owns_model(model, optimizer)
    _train(model, optimizer, device)
    for name, p in model.named_parameters():
        if name in BN_NAMES:
            assert (p != init[name]).all(), name  # every gamma and beta trained
        else:
            assert torch.equal(p, init[name]), name  # bit-identical to init
            assert p.grad is None  # never even computed


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("which", [0, 1, 2])
def test_random_control_trains_exactly_the_matched_count(device, which):
    model = _model(device)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    count = bn_only(model).count
    subset = random_subset(model, count, torch.Generator().manual_seed(3))
    assert subset.count == count and not set(subset.masks) & set(BN_NAMES)
    freeze_to(model, subset)
    optimizer = _optimizers(lambda wd: subset_param_groups(model, subset, wd))[which]()
    check_optimizer_owns_model(model, optimizer)
    _train(model, optimizer, device)
    changed = 0
    for name, p in model.named_parameters():
        moved = p != init[name]
        if name not in subset.masks:
            mask = torch.zeros_like(moved)
        else:
            mask = torch.ones_like(moved) if subset.masks[name] is None else subset.masks[name]
        assert torch.equal(moved, mask.to(moved.device)), name  # moved exactly where chosen
        changed += int(moved.sum())
    assert changed == count


def test_random_subset_is_reproducible_and_spread_over_the_network():
    model = _model("cpu")
    a, b, c = (random_subset(model, 40, torch.Generator().manual_seed(s)) for s in (5, 5, 6))
    assert a.masks.keys() == b.masks.keys()
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks if a.masks[n] is not None)
    assert any(c.masks.get(n) is None or not torch.equal(a.masks[n], c.masks[n])
               for n in a.masks if a.masks[n] is not None)  # fmt: skip
    # uniform over elements: over many draws each tensor gets count * numel / total on average
    sizes = {n: p.numel() for n, p in model.named_parameters() if n not in BN_NAMES}
    total = sum(sizes.values())
    hits = dict.fromkeys(sizes, 0)
    draws = 200
    for s in range(draws):
        sub = random_subset(model, 40, torch.Generator().manual_seed(100 + s))
        for n, m in sub.masks.items():
            hits[n] += sizes[n] if m is None else int(m.sum())
    for n, size in sizes.items():
        expected = draws * 40 * size / total
        assert abs(hits[n] - expected) < 5 * expected**0.5 + 2, n


def test_whole_tensor_drawn_completely_trains_with_weight_decay():
    model = _model("cpu")
    everything = sum(p.numel() for n, p in model.named_parameters() if n not in BN_NAMES)
    subset = random_subset(model, everything, torch.Generator().manual_seed(0))
    assert all(m is None for m in subset.masks.values()) and subset.count == everything
    groups = subset_param_groups(model, subset, 0.5)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.5
    with pytest.raises(ValueError, match="0 < count <="):
        random_subset(model, everything + 1, torch.Generator())


def test_trainable_subset_by_name():
    model = _model("cpu")
    assert trainable_subset(model, "all", 0) is None
    assert set(trainable_subset(model, "bn_only", 0).masks) == set(BN_NAMES)
    a, b = (trainable_subset(model, "random_matched", s) for s in (0, 0))
    assert a.count == b.count == 32 and all(
        (m is None and b.masks[n] is None) or torch.equal(m, b.masks[n]) for n, m in a.masks.items()
    )
    with pytest.raises(ValueError, match="expected one of all, bn_only, random_matched, got 'bn'"):
        trainable_subset(model, "bn", 0)
