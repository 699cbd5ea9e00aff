"""Noisy BN: the injected noise has the configured distributions, changes every step, is off in
eval mode, and comes only from the layer's own seeded generator."""

from __future__ import annotations

import math

import pytest
import torch

from normlab.layers import BatchNorm, create_norm
from normlab.layers.noisy import NoisyBatchNorm, held_noise

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _x(shape, seed=0, device="cpu", dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=dtype) * 3 + 1).to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_output_is_scaled_and_shifted_batch_norm(device):
    torch.manual_seed(0)
    noisy = NoisyBatchNorm(6, seed=1, device=device, dtype=torch.float64)
    plain = BatchNorm(6, device=device, dtype=torch.float64)
    with torch.no_grad():
        for m in (noisy, plain):
            m.weight.copy_(torch.linspace(0.5, 2, 6))
            m.bias.copy_(torch.linspace(-1, 1, 6))
    x = _x((10, 6, 3), device=device)
    y = noisy(x)
    s, m = noisy.last_noise
    assert s.shape == m.shape == x.shape
    torch.testing.assert_close(y, s * plain(x) + m, rtol=1e-12, atol=1e-12)
    # the running statistics are BN's, from the batch before the noise
    torch.testing.assert_close(noisy.running_mean, plain.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(noisy.running_var, plain.running_var, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_noise_statistics_match_the_configured_distributions(device):
    c, steps, a, lo, hi, sigma = 64, 300, 0.8, 0.5, 1.75, 0.2
    layer = NoisyBatchNorm(c, mean_max=a, scale_min=lo, scale_max=hi, sample_std=sigma,
                           seed=7, device=device, dtype=torch.float64)  # fmt: skip
    x = _x((32, c), device=device)
    mus, nus, scale_dev, shift_dev = [], [], [], []
    for _ in range(steps):
        layer(x)
        mu, nu = layer.last_params
        s, m = layer.last_noise
        mus.append(mu)
        nus.append(nu)
        scale_dev.append(s - nu)  # (N, C): the per-activation part, N(0, sigma^2)
        shift_dev.append(m - mu)
    mu, nu = torch.stack(mus).cpu(), torch.stack(nus).cpu()  # (steps, C)
    n = mu.numel()
    # U(-a, a): mean 0, variance a^2/3; U(lo, hi): mean (lo+hi)/2, variance (hi-lo)^2/12
    # tolerances: 5 standard errors of the mean; 5% on the variance (its SE is ~0.6% here)
    assert abs(mu.mean()) < 5 * a / math.sqrt(3 * n)
    assert mu.var() == pytest.approx(a**2 / 3, rel=0.05)
    assert -a <= mu.min() < -0.99 * a and 0.99 * a < mu.max() <= a
    assert abs(nu.mean() - (lo + hi) / 2) < 5 * (hi - lo) / math.sqrt(12 * n)
    assert nu.var() == pytest.approx((hi - lo) ** 2 / 12, rel=0.05)
    assert lo <= nu.min() < lo + 0.01 and hi - 0.01 < nu.max() <= hi
    for dev in (torch.stack(scale_dev), torch.stack(shift_dev)):
        assert abs(dev.mean()) < 5 * sigma / math.sqrt(dev.numel())
        assert dev.std() == pytest.approx(sigma, rel=0.02)
    # the distribution changes every step: consecutive steps' parameters are uncorrelated
    assert (mu[1:] != mu[:-1]).all() and (nu[1:] != nu[:-1]).all()
    lag1 = torch.corrcoef(torch.stack([mu[1:].flatten(), mu[:-1].flatten()]))[0, 1]
    assert abs(lag1) < 5 / math.sqrt(n)
    # and differs between channels within a step
    assert mu[0].unique().numel() == c


def test_zero_sample_std_gives_one_shift_and_scale_per_channel():
    layer = NoisyBatchNorm(4, sample_std=0.0, seed=3, dtype=torch.float64)
    layer(_x((8, 4, 5)))
    s, m = layer.last_noise
    mu, nu = layer.last_params
    assert torch.equal(s, nu.view(1, 4, 1).expand_as(s)) and torch.equal(m, mu.view(1, 4, 1).expand_as(m))


@pytest.mark.parametrize("device", DEVICES)
def test_eval_mode_is_plain_batch_norm_without_noise(device):
    noisy = NoisyBatchNorm(5, seed=2, device=device)
    plain = BatchNorm(5, device=device)
    for _ in range(3):
        x = _x((16, 5), seed=_, device=device, dtype=torch.float32)
        noisy(x)
        plain(x)
    drawn = noisy.last_noise
    noisy.eval()
    plain.eval()
    x = _x((4, 5), seed=9, device=device, dtype=torch.float32)
    assert torch.equal(noisy(x), plain(x))
    assert noisy.last_noise is drawn  # nothing drawn in eval mode
    # frozen in training mode normalizes with the running statistics: no noise either
    noisy.train().freeze()
    plain.train().freeze()
    assert torch.equal(noisy(x), plain(x))


def test_own_seeded_generator_and_no_global_rng():
    x = _x((8, 3))
    state = torch.random.get_rng_state()
    a, b, c = (NoisyBatchNorm(3, seed=s, dtype=torch.float64) for s in (5, 5, 6))
    ya, yb, yc = a(x), b(x), c(x)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    assert torch.equal(ya, yb) and not torch.allclose(ya, yc)
    assert not torch.equal(a(x), ya)  # the next step draws new noise
    gen = torch.Generator().manual_seed(5)
    d = NoisyBatchNorm(3, seed=999, generator=gen, dtype=torch.float64)
    assert torch.equal(d(x), ya) and d.generator is gen


def test_default_seed_comes_from_the_global_generator_once_at_construction():
    torch.manual_seed(11)
    a, b = NoisyBatchNorm(3), NoisyBatchNorm(3)
    torch.manual_seed(11)
    c = NoisyBatchNorm(3)
    assert a.seed == c.seed and a.seed != b.seed  # reproducible per run, distinct per layer
    x = _x((8, 3), dtype=torch.float32)
    state = torch.random.get_rng_state()
    assert torch.equal(a(x), c(x)) and not torch.equal(a(x), b(x))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_held_noise_holds_every_noisy_layer_and_restores():
    model = torch.nn.Sequential(NoisyBatchNorm(3, seed=1), torch.nn.Linear(3, 3), NoisyBatchNorm(3, seed=2))
    x = _x((8, 3), dtype=torch.float32)
    with held_noise(model):
        y = model(x)
        assert all(m.hold for m in (model[0], model[2]))
        assert torch.equal(model(x), y)
    assert not model[0].hold and not model[2].hold
    assert not torch.equal(model(x), y)


def test_hold_reuses_the_last_noise():
    layer = NoisyBatchNorm(3, seed=1, dtype=torch.float64)
    x = _x((8, 3))
    y = layer(x)
    layer.hold = True
    assert torch.equal(layer(x), y)
    layer.hold = False
    assert not torch.equal(layer(x), y)


def test_gradients_flow_through_the_noise():
    layer = NoisyBatchNorm(3, seed=1, dtype=torch.float64)
    x = _x((8, 3)).requires_grad_()
    layer(x).pow(2).sum().backward()
    s, m = layer.last_noise
    xhat = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + layer.eps)
    # dL/dbeta = sum 2 y s,  y = s (xhat gamma + beta) + m  with gamma = 1, beta = 0
    y = s * xhat + m
    torch.testing.assert_close(layer.bias.grad, (2 * y * s).sum(0).detach())
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_registered_by_name_with_its_arguments():
    layer = create_norm("noisy_batch", 8, mean_max=0.25, scale_min=1.0, scale_max=1.0, seed=4)
    assert isinstance(layer, NoisyBatchNorm) and layer.mean_max == 0.25 and layer.seed == 4


@pytest.mark.parametrize(
    "kwargs", [{"mean_max": -1.0}, {"scale_min": 2.0, "scale_max": 1.0}, {"scale_min": -0.5}, {"sample_std": -0.1}]
)
def test_bad_noise_arguments_are_one_clear_error(kwargs):
    with pytest.raises(ValueError, match="noisy batch norm needs mean_max >= 0"):
        NoisyBatchNorm(4, **kwargs)


def test_builds_under_the_meta_device_with_the_same_seed_draw():
    """A shape-only build (`with torch.device("meta")`, as the runner's preflight does) works,
    and draws its seed from the global CPU generator exactly as a normal build does."""
    torch.manual_seed(5)
    with torch.device("meta"):
        meta = NoisyBatchNorm(4)
    torch.manual_seed(5)
    assert NoisyBatchNorm(4).seed == meta.seed and meta.weight.is_meta
