"""The smoothness probe on quadratics whose loss, gradient change and curvature are exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from normlab.layers import BatchNorm
from normlab.train.landscape import landscape_probe

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class Quadratic(nn.Module):
    """L(w) = w^T A w / 2 over one parameter w (d,), A symmetric (d, d)."""

    def __init__(self, a, w, device):
        super().__init__()
        self.register_buffer("a", torch.as_tensor(a, dtype=torch.float64, device=device))
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float64, device=device))

    def loss(self):
        return 0.5 * self.w @ self.a @ self.w


def _spd(d, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    eig = np.linspace(0.5, 7.0, d)
    return q @ np.diag(eig) @ q.T, q, eig


@pytest.mark.parametrize("device", DEVICES)
def test_quadratic_losses_and_gradient_changes_are_exact(device):
    a, _, _ = _spd(5, 0)
    w = np.random.default_rng(1).normal(size=5)
    etas = [0.01, 0.05, 0.1, 0.3]
    probe = landscape_probe(Quadratic(a, w, device), lambda m: m.loss(), etas)
    g = a @ w
    for eta, loss, change in zip(etas, probe.losses, probe.grad_changes):
        # L(w - eta g) = L(w) - eta g.g + eta^2 g.A.g / 2;  grad change = eta ||A g||
        assert loss == pytest.approx(0.5 * w @ a @ w - eta * g @ g + 0.5 * eta**2 * g @ a @ g, rel=1e-12)
        assert change == pytest.approx(eta * np.linalg.norm(a @ g), rel=1e-12)
    assert probe.loss == pytest.approx(0.5 * w @ a @ w, rel=1e-12)
    assert probe.grad_norm == pytest.approx(np.linalg.norm(g), rel=1e-12)
    assert probe.beta_smoothness == pytest.approx(np.linalg.norm(a @ g) / np.linalg.norm(g), rel=1e-12)
    assert probe.loss_range == pytest.approx(max(probe.losses) - min(probe.losses))
    assert probe.max_grad_change == pytest.approx(0.3 * np.linalg.norm(a @ g), rel=1e-12)


@pytest.mark.parametrize("k", [0, 2, 4])
def test_smoothness_along_an_eigenvector_is_its_eigenvalue(k):
    a, q, eig = _spd(5, 3)
    probe = landscape_probe(Quadratic(a, 2.0 * q[:, k], "cpu"), lambda m: m.loss(), [0.02, 0.1])
    assert probe.beta_smoothness == pytest.approx(eig[k], rel=1e-12)
    # along the top eigenvector: the global beta-smoothness, the largest eigenvalue
    if k == 4:
        assert probe.beta_smoothness == pytest.approx(np.linalg.eigvalsh(a).max(), rel=1e-12)


def test_smoothness_is_the_worst_ratio_over_step_sizes():
    # L(w) = w^4 / 4 (not quadratic): g = w^3, grad change at eta is |w^3 - (w - eta w^3)^3|
    class Quartic(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

    etas = [0.1, 0.5, 1.5]
    probe = landscape_probe(Quartic(), lambda m: m.w**4 / 4, etas)
    ratios = [abs(1 - (1 - e) ** 3) / e for e in etas]
    assert probe.grad_changes == pytest.approx([abs(1 - (1 - e) ** 3) for e in etas], rel=1e-12)
    assert probe.beta_smoothness == pytest.approx(max(ratios), rel=1e-12)
    assert probe.losses == pytest.approx([(1 - e) ** 4 / 4 for e in etas], rel=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_model_is_left_exactly_as_it_was(device):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), BatchNorm(8), nn.ReLU(), nn.Linear(8, 3)).to(device)
    x, y = torch.randn(10, 6, device=device), torch.randint(0, 3, (10,), device=device)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe = landscape_probe(model, lambda m: nn.functional.cross_entropy(m(x), y), [0.1, 1.0])
    assert probe.max_grad_change > 0 and probe.beta_smoothness > 0
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_bad_step_sizes_are_a_clear_error():
    a, _, _ = _spd(2, 0)
    for bad in ([], [0.1, 0.0], [-1.0]):
        with pytest.raises(ValueError, match="step sizes > 0"):
            landscape_probe(Quadratic(a, [1.0, 1.0], "cpu"), lambda m: m.loss(), bad)
