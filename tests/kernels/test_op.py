"""normlab.kernels.batch_norm (autograd + custom ops) against torch.nn.functional.batch_norm."""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from normlab.kernels import batch_norm  # noqa: E402

SHAPES = [
    ((3, 5, 7, 9), "contiguous"),
    ((3, 6, 5, 7), "channels_last"),
    ((37, 13), "contiguous"),
    ((5, 7, 33), "contiguous"),
]


def _inputs(shape, fmt, device, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    C = shape[1]
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.5).to(dtype)
    if fmt != "contiguous":
        x = x.to(memory_format=getattr(torch, fmt))
    w = torch.randn(C, generator=g) * 0.5 + 1.0
    b = torch.randn(C, generator=g)
    rm, rv = torch.randn(C, generator=g), torch.rand(C, generator=g) + 0.5
    dy = torch.randn(shape, generator=g).to(dtype)
    return [t.to(device) for t in (x, w, b, rm, rv, dy)]


def _reference(x, w, b, rm, rv, dy, training, momentum, eps, relu):
    """Float64 torch on the same inputs: y, grads (x, w, b), running stats."""
    x64 = x.detach().double().cpu().requires_grad_()
    w64 = None if w is None else w.detach().double().cpu().requires_grad_()
    b64 = None if b is None else b.detach().double().cpu().requires_grad_()
    rm64 = None if rm is None else rm.double().cpu()
    rv64 = None if rv is None else rv.double().cpu()
    y = F.batch_norm(x64, rm64, rv64, w64, b64, training, momentum, eps)
    y = y.clamp_min(0) if relu else y
    y.backward(dy.double().cpu())
    return (
        y.detach(),
        x64.grad,
        (w64.grad if w64 is not None else None),
        (b64.grad if b64 is not None else None),
        rm64,
        rv64,
    )


def _close(got, want, rtol=1e-5, atol=1e-5):
    scale = max(want.abs().max().item(), 1.0)
    torch.testing.assert_close(got.detach().cpu().double(), want, rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("shape,fmt", SHAPES)
@pytest.mark.parametrize("relu", [False, True])
def test_training_matches_torch(shape, fmt, relu, device, poison):
    x, w, b, rm, rv, dy = _inputs(shape, fmt, device)
    want = _reference(x, w, b, rm, rv, dy, True, 0.1, 1e-5, relu)
    x.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    y = batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5, relu=relu)
    y.backward(dy)
    for got, ref in zip((y, x.grad, w.grad, b.grad, rm, rv), want):
        _close(got, ref)
    assert y.stride() == x.stride() and x.grad.stride() == x.stride()


@pytest.mark.parametrize("relu", [False, True])
def test_eval_matches_torch_and_leaves_running_stats(relu, device, poison):
    x, w, b, rm, rv, dy = _inputs((4, 6, 5, 3), "contiguous", device, seed=1)
    rm0, rv0 = rm.clone(), rv.clone()
    want = _reference(x, w, b, rm, rv, dy, False, 0.1, 1e-3, relu)
    x.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    y = batch_norm(x, rm, rv, w, b, training=False, momentum=0.1, eps=1e-3, relu=relu)
    y.backward(dy)
    for got, ref in zip((y, x.grad, w.grad, b.grad), want):
        _close(got, ref)
    assert torch.equal(rm, rm0) and torch.equal(rv, rv0)


def test_no_affine_no_running_stats(device, poison):
    x, _, _, _, _, dy = _inputs((6, 5, 11), "contiguous", device, seed=2)
    want = _reference(x, None, None, None, None, dy, True, 0.1, 1e-5, False)
    x.requires_grad_()
    y = batch_norm(x, None, None, None, None, training=True, momentum=0.1, eps=1e-5)
    y.backward(dy)
    _close(y, want[0])
    _close(x.grad, want[1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_with_float32_params(dtype, device, poison):
    x, w, b, rm, rv, dy = _inputs((4, 6, 5, 7), "channels_last", device, dtype=dtype, seed=3)
    want = _reference(x, w, b, rm, rv, dy, True, 0.1, 1e-5, False)
    x.requires_grad_(), w.requires_grad_(), b.requires_grad_()
    y = batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
    y.backward(dy)
    assert y.dtype == dtype and x.grad.dtype == dtype and w.grad.dtype == torch.float32
    _close(y, want[0], rtol=1e-2, atol=1e-2)
    _close(x.grad, want[1], rtol=1e-2, atol=1e-2)
    for got, ref in zip((w.grad, b.grad, rm, rv), want[2:]):
        _close(got, ref, rtol=1e-4, atol=1e-5)


def test_non_dense_input_is_handled(device, poison):
    base, w, b, rm, rv, _ = _inputs((4, 5, 6, 14), "contiguous", device, seed=4)
    x = base[..., ::2]  # strided: neither contiguous nor channels-last
    dy = torch.randn(x.shape, device=device)
    want = _reference(x, w, b, rm, rv, dy, True, 0.3, 1e-5, False)
    x = x.detach().requires_grad_()
    y = batch_norm(x, rm, rv, w, b, training=True, momentum=0.3, eps=1e-5)
    y.backward(dy)
    for got, ref in zip((y, x.grad), want[:2]):
        _close(got, ref)
    _close(rm, want[4])
    _close(rv, want[5])


def test_two_values_per_channel_unbiased_running_var(device, poison):
    """M=2: the smallest batch torch accepts; running_var gets var * M/(M-1)."""
    x, w, b, rm, rv, dy = _inputs((2, 3), "contiguous", device, seed=5)
    want = _reference(x, w, b, rm, rv, dy, True, 1.0, 1e-5, False)
    batch_norm(x, rm, rv, w, b, training=True, momentum=1.0, eps=1e-5)
    _close(rm, want[4])
    _close(rv, want[5])


def test_works_under_torch_compile(device):
    x, w, b, rm, rv, dy = _inputs((4, 6, 5, 3), "contiguous", device, seed=6)
    rm_eager, rv_eager = rm.clone(), rv.clone()
    y_eager = batch_norm(x, rm_eager, rv_eager, w, b, True, 0.1, 1e-5, True)

    def step(x, rm, rv, w, b):
        return batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5, relu=True) * 2

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    xg = x.clone().requires_grad_()
    y = compiled(xg, rm, rv, w, b)
    y.backward(dy)
    assert torch.equal(y, y_eager * 2)
    assert torch.equal(rm, rm_eager) and torch.equal(rv, rv_eager)  # mutation kept
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_custom_ops_pass_opcheck(device):
    from normlab.kernels.op import bn_backward, bn_forward

    x, w, b, rm, rv, dy = _inputs((3, 4, 5), "contiguous", device, seed=7)
    torch.library.opcheck(
        bn_forward, (x, rm, rv, w, b, True, 0.1, 1e-5, False), test_utils=("test_schema", "test_faketensor")
    )
    _, stats = bn_forward(x, None, None, w, b, True, 0.1, 1e-5, False)
    torch.library.opcheck(bn_backward, (dy, x, stats, w, True, False), test_utils=("test_schema", "test_faketensor"))


def test_double_backward_is_refused_clearly(device):
    x, w, b, rm, rv, dy = _inputs((4, 3, 5), "contiguous", device, seed=8)
    x.requires_grad_()
    y = batch_norm(x, None, None, w, b, training=True)
    (gx,) = torch.autograd.grad(y, x, dy, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        gx.sum().backward()
