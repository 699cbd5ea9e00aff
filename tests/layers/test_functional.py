"""functional.batch_norm against torch's F.batch_norm, float64 math, and gradcheck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from normlab.layers import functional

SHAPES = [(5, 3), (4, 3, 7), (3, 3, 4, 5), (2, 3, 2, 3, 4), (17, 3, 1)]
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def _inputs(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = (torch.randn(shape, generator=g, dtype=dtype) * 3 + 2).requires_grad_()
    w = (torch.rand(c, generator=g, dtype=dtype) + 0.5).requires_grad_()
    b = torch.randn(c, generator=g, dtype=dtype).requires_grad_()
    rm = torch.randn(c, generator=g, dtype=dtype)
    rv = torch.rand(c, generator=g, dtype=dtype) + 0.5
    return x, w, b, rm, rv


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_matches_torch_functional(shape, training, dtype, affine):
    x, w, b, rm, rv = _inputs(shape, dtype)
    w = w if affine in ("both", "weight") else None
    b = b if affine in ("both", "bias") else None
    rm2, rv2 = rm.clone(), rv.clone()
    y = functional.batch_norm(x, rm, rv, w, b, training, 0.3, 1e-5)
    y_ref = F.batch_norm(x, rm2, rv2, w, b, training, 0.3, 1e-5)
    dy = torch.randn_like(y)
    params = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(y, params, dy)
    grads_ref = torch.autograd.grad(y_ref, params, dy)
    torch.testing.assert_close(y, y_ref, **TOL[dtype])
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, **TOL[dtype])
    torch.testing.assert_close(rm, rm2, **TOL[dtype])
    torch.testing.assert_close(rv, rv2, **TOL[dtype])


def test_matches_float64_math():
    # Independent of torch's kernel: the definitions written out in float64.
    x, w, b, rm, rv = _inputs((6, 4, 5), torch.float64)
    y = functional.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5)
    mean = x.mean((0, 2), keepdim=True)
    var = ((x - mean) ** 2).mean((0, 2), keepdim=True)
    want = (x - mean) / torch.sqrt(var + 1e-5) * w.view(1, -1, 1) + b.view(1, -1, 1)
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y)
    torch.testing.assert_close(
        torch.autograd.grad(y, x, dy)[0],
        torch.autograd.grad(want, x, dy)[0],
        rtol=1e-10,
        atol=1e-10,
    )


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5), (2, 2, 3, 3)])
def test_gradcheck(shape, training):
    x, w, b, rm, rv = _inputs(shape, torch.float64)

    def fn(x, w, b):
        return functional.batch_norm(x, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-5)

    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_tensor_momentum_equals_float():
    x, w, b, rm, rv = _inputs((8, 3, 4), torch.float64)
    rm2, rv2 = rm.clone(), rv.clone()
    functional.batch_norm(x, rm, rv, w, b, True, torch.tensor(0.25, dtype=torch.float64))
    F.batch_norm(x, rm2, rv2, w, b, True, 0.25)
    torch.testing.assert_close(rm, rm2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rv, rv2, rtol=1e-12, atol=1e-12)


def test_momentum_none_is_cumulative_average():
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    batches = [_inputs((6, 3, 2), torch.float64, seed=s)[0].detach() for s in range(3)]
    for step, x in enumerate(batches, start=1):
        functional.batch_norm(x, rm, rv, None, None, True, None, num_batches_tracked=torch.tensor(step))
    dims = (0, 2)
    torch.testing.assert_close(rm, torch.stack([x.mean(dims) for x in batches]).mean(0))
    torch.testing.assert_close(rv, torch.stack([x.var(dims) for x in batches]).mean(0))
    with pytest.raises(ValueError, match="needs num_batches_tracked"):
        functional.batch_norm(batches[0], rm, rv, training=True, momentum=None)


def test_running_var_is_unbiased_and_normalization_biased():
    x = torch.tensor([[1.0], [3.0]], dtype=torch.float64)  # mean 2, biased var 1, unbiased 2
    rm, rv = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    # eps=1e-300 vanishes next to var=1 in float64 (torch refuses eps=0 in training).
    y = functional.batch_norm(x, rm, rv, training=True, momentum=1.0, eps=1e-300)
    torch.testing.assert_close(y, torch.tensor([[-1.0], [1.0]], dtype=torch.float64))
    assert rm.item() == 2.0 and rv.item() == 2.0


def test_large_offset_float32_normalizes():
    g = torch.Generator().manual_seed(1)
    x64 = torch.randn(64, 4, 32, generator=g, dtype=torch.float64) + 1e4
    y = functional.batch_norm(x64.float(), None, None, training=True)
    want = functional.batch_norm(x64, None, None, training=True)
    # float32 holds 1e4 + noise to ~1e-3 absolute; a naive E[x^2]-E[x]^2 would be off by O(1).
    torch.testing.assert_close(y.double(), want, rtol=0, atol=5e-3)
    assert abs(y.double().std().item() - 1.0) < 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_computes_in_float32(dtype):
    x, w, b, rm, rv = _inputs((16, 3, 8), torch.float32)
    x = x.detach().to(dtype).requires_grad_()
    y = functional.batch_norm(x, None, None, w, b, True)
    assert y.dtype == dtype
    want = functional.batch_norm(x.detach().float(), None, None, w, b, True)
    torch.testing.assert_close(y.float(), want, rtol=0, atol=3e-2)
    y.float().sum().backward()
    assert x.grad.dtype == dtype and w.grad.dtype == torch.float32


def test_scale_invariance_in_training():
    x, w, b, _, _ = _inputs((8, 3, 5), torch.float64)
    y1 = functional.batch_norm(x, None, None, w, b, True, eps=1e-300)
    y2 = functional.batch_norm(x * 7.5, None, None, w, b, True, eps=1e-300)
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)


def test_errors_are_clear():
    with pytest.raises(ValueError, match=r"at least 2 dims, got shape \(3,\)"):
        functional.batch_norm(torch.randn(3), None, None, training=True)
    with pytest.raises(ValueError, match="expected 3 channels in dim 1, got 4"):
        functional.batch_norm(torch.randn(2, 4), torch.zeros(3), torch.ones(3), training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        functional.batch_norm(torch.randn(1, 3), None, None, training=True)
    with pytest.raises(ValueError, match="needs running_mean and running_var"):
        functional.batch_norm(torch.randn(2, 3), None, None, training=False)


def test_running_stats_are_checked_before_any_update():
    # As F.batch_norm: one buffer without the other, or mismatched shapes, is refused up front
    # (it used to fail halfway, with running_mean already updated, or with a bare TypeError).
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="both given or both None, got only running_var"):
        functional.batch_norm(x, None, torch.ones(3), training=True, momentum=None)
    rm = torch.zeros(3)
    with pytest.raises(ValueError, match=r"running_var of shape \(3,\) like running_mean, got"):
        functional.batch_norm(x + 5, rm, torch.ones(4), training=True)
    assert torch.equal(rm, torch.zeros(3))


def test_batch_mean_var_matches_var_mean_and_is_differentiable():
    x, *_ = _inputs((6, 3, 4, 2), torch.float64)
    mean, var = functional.batch_mean_var(x)
    want_var, want_mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(mean, want_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, want_var, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: functional.batch_mean_var(t)[1], (x,))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5)])
def test_gradgradcheck(shape, training, affine):
    # Second derivatives (double backward) must be right, never silently off: in eval mode
    # with affine the reference once gave exactly half of torch's through the weight.
    x, w, b, rm, rv = _inputs(shape, torch.float64)

    def fn(x, *params):
        w, b = params if affine else (None, None)
        return functional.batch_norm(x, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-5)

    args = (x, w, b) if affine else (x,)
    assert torch.autograd.gradgradcheck(fn, args)
    assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("training", [True, False])
def test_second_derivative_equals_torch(training):
    # Hessian-vector product through x and weight, against torch's own double backward.
    x, w, b, rm, rv = _inputs((5, 3, 4), torch.float64)

    def hvp(bn_fn):
        y = bn_fn(x, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-5)
        gx, gw = torch.autograd.grad((y.sin()).sum(), (x, w), create_graph=True)
        return torch.autograd.grad(gx.square().sum() + gw.square().sum(), (x, w, b))

    for got, want in zip(hvp(functional.batch_norm), hvp(F.batch_norm)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
