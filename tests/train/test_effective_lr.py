"""The effective lr lr/||W||^2 against hand computations, and its trace over SGD steps against
the recursion scale invariance implies: ||W_{t+1}||^2 = (1 - lr wd)^2 ||W_t||^2 + lr^2 ||g_t||^2."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from normlab.layers import BatchNorm, GroupNorm
from normlab.models.mlp import MLP
from normlab.train.effective_lr import effective_lrs, scale_invariant_weights

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_hand_values():
    model = nn.Sequential(nn.Linear(2, 1, bias=False), BatchNorm(1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 4.0]]))
    out = effective_lrs(model, lr=0.1)
    assert list(out) == ["0.weight"]
    assert out["0.weight"].weight_norm == 5.0
    assert out["0.weight"].effective_lr == pytest.approx(0.1 / 25, rel=1e-15)
    # a 2x2 weight: ||W||_F = sqrt(1 + 4 + 4 + 16) = 5 as well
    model = nn.Sequential(nn.Linear(2, 2, bias=False), BatchNorm(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0], [2.0, 4.0]]))
    assert effective_lrs(model, lr=0.5)["0.weight"].effective_lr == pytest.approx(0.02, rel=1e-15)


def test_finds_the_weights_a_batch_norm_follows():
    model = MLP((1, 6), 3, hidden=[5, 4], norm="batch")
    assert scale_invariant_weights(model) == ["blocks.0.linear.weight", "blocks.1.linear.weight"]
    assert scale_invariant_weights(MLP((1, 6), 3, hidden=[5], norm="none")) == []
    gn = MLP((1, 6), 3, hidden=[4], norm="group", norm_kwargs={"num_groups": 2})
    assert scale_invariant_weights(gn, lambda m: isinstance(m, GroupNorm)) == ["blocks.0.linear.weight"]
    with pytest.raises(ValueError, match="no parameter named nope"):
        effective_lrs(model, 0.1, ["nope"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_trace_matches_the_hand_recursion(device, weight_decay):
    torch.manual_seed(0)
    lr, steps = 0.5, 20
    # eps tiny so the layer is scale-invariant to float64 precision (gradient orthogonal to W)
    model = nn.Sequential(nn.Linear(5, 3, bias=False), BatchNorm(3, eps=1e-12), nn.Tanh(),
                          nn.Linear(3, 2)).to(device, torch.float64)  # fmt: skip
    opt = torch.optim.SGD([{"params": model[0].parameters(), "weight_decay": weight_decay},
                           {"params": model[3].parameters(), "weight_decay": 0.0}], lr=lr)  # fmt: skip
    g = torch.Generator().manual_seed(1)
    initial = model[0].weight.double().norm().item()
    w_sq = initial**2  # the hand recursion's state
    for _ in range(steps):
        trace = effective_lrs(model, lr)["0.weight"]
        assert trace.weight_norm == pytest.approx(math.sqrt(w_sq), rel=1e-9)
        assert trace.effective_lr == pytest.approx(lr / w_sq, rel=1e-9)
        x = torch.randn(8, 5, generator=g, dtype=torch.float64).to(device)
        y = torch.randint(0, 2, (8,), generator=g).to(device)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        grad, w = model[0].weight.grad, model[0].weight.detach()
        assert abs(float((grad * w).sum())) < 1e-9 * float(grad.norm() * w.norm())  # g is orthogonal to W
        w_sq = (1 - lr * weight_decay) ** 2 * w_sq + lr**2 * float(grad.norm()) ** 2
        opt.step()
    final = effective_lrs(model, lr)["0.weight"]
    assert final.weight_norm == pytest.approx(math.sqrt(w_sq), rel=1e-9)
    if weight_decay == 0.0:  # without decay ||W|| only grows, so the effective lr only falls
        assert final.weight_norm > initial
