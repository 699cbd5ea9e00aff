"""ICS (Santurkar et al. 2018 Def. 2.1) against closed forms on linear toys, in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from normlab.layers import BatchNorm
from normlab.train.ics import (
    internal_covariate_shift,
    layer_parameters,
    optimizer_deltas,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _linear(d_in, d_out, weight, device):
    layer = nn.Linear(d_in, d_out, bias=False, dtype=torch.float64, device=device)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight))
    return layer


def test_scalar_toy_by_hand():
    # f = w2 * w1 * x, L = (f - y)^2 / 2 with w1=2, w2=3, x=1, y=0, lr=0.1:
    # r = 6, G1 = r*w2*x = 18, G2 = r*w1*x = 12; w1' = 2 - 0.1*18 = 0.2, r' = 0.6,
    # G2' = r'*w1'*x = 0.12: ICS_2 = 11.88, cos = 1 (same sign)
    model = nn.Sequential(_linear(1, 1, [[2.0]], "cpu"), _linear(1, 1, [[3.0]], "cpu"))
    x, y = torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
    first, second = internal_covariate_shift(model, lambda m: 0.5 * ((m(x) - y) ** 2).sum(), lr=0.1)
    assert (first.l2, first.cosine, first.grad_norm) == (0.0, 1.0, 18.0)
    assert second.l2 == pytest.approx(11.88, rel=1e-12)
    assert second.cosine == pytest.approx(1.0, rel=1e-12)
    assert second.grad_norm == pytest.approx(12.0, rel=1e-12)


def _hand_ics(x, y, w1, w2, lr):
    """Closed form for L = ||X W1^T W2^T - Y||^2 / (2N): G2 before and after W1's SGD step."""
    n = len(x)
    h = x @ w1.T  # (N, d1)
    r = h @ w2.T - y  # (N, d2)
    g2 = r.T @ h / n  # (d2, d1)
    g1 = (r @ w2).T @ x / n  # (d1, d0)
    h_new = x @ (w1 - lr * g1).T
    g2_new = (h_new @ w2.T - y).T @ h_new / n
    diff = np.linalg.norm(g2 - g2_new)
    cos = (g2 * g2_new).sum() / (np.linalg.norm(g2) * np.linalg.norm(g2_new))
    return np.linalg.norm(g1), np.linalg.norm(g2), diff, cos


@pytest.mark.parametrize("device", DEVICES)
def test_two_layer_linear_matches_closed_form(device):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 5)), rng.normal(size=(16, 3))
    w1, w2 = rng.normal(size=(4, 5)), rng.normal(size=(3, 4))
    lr = 0.05
    model = nn.Sequential(_linear(5, 4, w1, device), _linear(4, 3, w2, device))
    xt, yt = (torch.as_tensor(a, device=device) for a in (x, y))

    def loss_fn(m):
        return 0.5 * ((m(xt) - yt) ** 2).sum() / len(xt)

    first, second = internal_covariate_shift(model, loss_fn, lr=lr)
    g1_norm, g2_norm, diff, cos = _hand_ics(x, y, w1, w2, lr)
    assert first.grad_norm == pytest.approx(g1_norm, rel=1e-10)
    assert second.grad_norm == pytest.approx(g2_norm, rel=1e-10)
    assert second.l2 == pytest.approx(diff, rel=1e-10)
    assert second.cosine == pytest.approx(cos, rel=1e-10)
    assert diff > 1e-3 and cos < 1 - 1e-6  # the toy really shifts


def test_third_layer_sees_both_earlier_steps_and_given_deltas_are_used():
    # f = w3 w2 w1 x: layer 3's gradient after layers 1 and 2 take the given steps d1, d2
    w1, w2, w3, x, y = 1.5, -0.5, 2.0, 1.0, 0.25
    d1, d2 = 0.25, -0.75
    model = nn.Sequential(*(_linear(1, 1, [[w]], "cpu") for w in (w1, w2, w3)))
    xt, yt = torch.full((1, 1), x, dtype=torch.float64), torch.full((1, 1), y, dtype=torch.float64)
    deltas = [[torch.full((1, 1), d, dtype=torch.float64)] for d in (d1, d2, 9.0)]
    out = internal_covariate_shift(model, lambda m: 0.5 * ((m(xt) - yt) ** 2).sum(), deltas=deltas)

    def g3(a, b):  # dL/dw3 = (w3 a b x - y) a b x
        return (w3 * a * b * x - y) * a * b * x

    def g2(a):  # dL/dw2 at w1 = a, w2 = w2
        return (w3 * w2 * a * x - y) * w3 * a * x

    assert out[1].l2 == pytest.approx(abs(g2(w1) - g2(w1 + d1)), rel=1e-12)
    assert out[2].l2 == pytest.approx(abs(g3(w1, w2) - g3(w1 + d1, w2 + d2)), rel=1e-12)
    assert out[2].cosine == pytest.approx(np.sign(g3(w1, w2) * g3(w1 + d1, w2 + d2)))


def _bn_mlp(device):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), BatchNorm(8), nn.ReLU(), nn.Linear(8, 3)).to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_model_is_left_exactly_as_it_was(device):
    model = _bn_mlp(device)
    x, y = torch.randn(10, 6, device=device), torch.randint(0, 3, (10,), device=device)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = internal_covariate_shift(model, lambda m: nn.functional.cross_entropy(m(x), y), lr=0.5)
    assert len(out) == 2 and out[1].l2 > 0
    for key, value in model.state_dict().items():  # weights and BN running stats, bit for bit
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())


def test_optimizer_deltas_are_the_step_and_leave_the_optimizer_alone():
    model = _bn_mlp("cpu")
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))

    def loss_fn(m):
        return nn.functional.cross_entropy(m(x), y)

    sgd = torch.optim.SGD(model.parameters(), lr=0.3)
    grads = torch.autograd.grad(loss_fn(model), [p for l in layer_parameters(model) for p in l])
    steps = [d for layer in optimizer_deltas(model, sgd, loss_fn) for d in layer]
    for g, d in zip(grads, steps):
        torch.testing.assert_close(d, -0.3 * g)
    # Adam: two real steps equal two real steps taken after a delta probe in between
    twin = _bn_mlp("cpu")
    adam, adam_twin = (torch.optim.Adam(m.parameters(), lr=0.01) for m in (model, twin))
    for step in range(2):
        for m, opt in ((model, adam), (twin, adam_twin)):
            if m is model and step == 1:
                optimizer_deltas(m, opt, loss_fn)
            opt.zero_grad()
            loss_fn(m).backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_sgd_deltas_equal_lr_form():
    model = _bn_mlp("cpu")
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))

    def loss_fn(m):
        return nn.functional.cross_entropy(m(x), y)

    deltas = optimizer_deltas(model, torch.optim.SGD(model.parameters(), lr=0.2), loss_fn)
    a = internal_covariate_shift(model, loss_fn, lr=0.2)
    b = internal_covariate_shift(model, loss_fn, deltas=deltas)
    for u, v in zip(a, b):
        assert u.l2 == pytest.approx(v.l2, rel=1e-5) and u.cosine == pytest.approx(v.cosine, rel=1e-5)


def test_needs_exactly_one_step_rule():
    model = _bn_mlp("cpu")
    with pytest.raises(ValueError, match="exactly one of lr"):
        internal_covariate_shift(model, lambda m: m(torch.randn(4, 6)).sum())
    with pytest.raises(ValueError, match="no Linear/Conv layer"):
        internal_covariate_shift(nn.Sequential(nn.ReLU()), lambda m: torch.zeros(()), lr=0.1)
