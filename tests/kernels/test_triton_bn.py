"""The Triton kernels (through their launchers) against float64 math, on odd shapes and layouts.

Every output, partial-sum and coefficient buffer is NaN-poisoned (``poison`` fixture), so an
element a kernel forgets to write fails the comparison.
"""

import pytest
import torch

pytest.importorskip("triton")

from normlab.bench.kernels.tuning import V4_CHANGES, V4_KNOBS, knobs_with  # noqa: E402
from normlab.kernels import launch  # noqa: E402

# (shape, memory format): odd sizes, channel counts that are not powers of two, N*H*W that is
# not a multiple of any block; one NCHW shape per tile rule (small H*W, large H*W).
CASES = [
    ((3, 5, 7, 9), "contiguous"),  # NCHW, small H*W: [channels, H*W] tiles
    ((2, 3, 23, 25), "contiguous"),  # NCHW, H*W >= 512: one channel per tile
    ((3, 6, 5, 7), "channels_last"),
    ((37, 13), "contiguous"),  # BatchNorm1d on (N, C)
    ((5, 7, 33), "contiguous"),  # BatchNorm1d on (N, C, L)
    ((3, 4, 2, 3, 5), "channels_last_3d"),
]
TOL = {  # (rtol, atol) for values of order 1; the interpreter truncates fp32 -> bf16
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (1e-2, 2e-2),
    torch.float16: (2e-3, 2e-3),
}


def _make(shape, fmt, dtype, device, offset=0.0):
    x = torch.randn(shape, dtype=torch.float64) * 2.0 + offset
    x = x.to(dtype)
    if fmt != "contiguous":
        x = x.to(memory_format=getattr(torch, fmt))
    return x.to(device)


def _ref_forward(x64, w64, b64, eps, relu):
    dims = [0] + list(range(2, x64.dim()))
    mean = x64.mean(dims)
    var = x64.var(dims, unbiased=False)
    invstd = 1.0 / torch.sqrt(var + eps)
    a = w64 * invstd
    b = b64 - mean * a
    shape = [1, -1] + [1] * (x64.dim() - 2)
    y = x64 * a.view(shape) + b.view(shape)
    return (y.clamp_min(0) if relu else y), mean, invstd, a, b


@pytest.mark.parametrize("shape,fmt", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_forward_matches_float64(shape, fmt, dtype, device, poison):
    torch.manual_seed(0)
    x = _make(shape, fmt, dtype, device)
    C = shape[1]
    w = torch.randn(C, device=device)
    b = torch.randn(C, device=device)
    y, stats = launch.forward(launch.make_dense(x), None, None, w, b, True, 0.1, 1e-5, False)
    y_ref, mean, invstd, a, bb = _ref_forward(x.double().cpu(), w.double().cpu(), b.double().cpu(), 1e-5, False)
    rtol, atol = TOL[dtype]
    assert y.dtype == dtype and y.stride() == x.stride()
    torch.testing.assert_close(y.cpu().double(), y_ref, rtol=rtol, atol=atol)
    # Statistics come from the same (rounded) inputs in float32: tight whatever the dtype.
    torch.testing.assert_close(stats.cpu().double(), torch.stack([mean, invstd, a, bb]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,fmt", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("relu", [False, True])
def test_backward_matches_float64(shape, fmt, dtype, relu, device, poison):
    torch.manual_seed(1)
    x = _make(shape, fmt, dtype, device)
    C = shape[1]
    w = torch.randn(C, device=device)
    b = torch.randn(C, device=device)
    dy = torch.randn(shape, device=device).to(dtype)
    xd = launch.make_dense(x)
    _, stats = launch.forward(xd, None, None, w, b, True, 0.1, 1e-5, relu)
    dx, dw, db = launch.backward(dy, xd, stats, w, True, relu)

    x64 = x.double().cpu().requires_grad_()
    w64 = w.double().cpu().requires_grad_()
    b64 = b.double().cpu().requires_grad_()
    y64 = _ref_forward(x64, w64, b64, 1e-5, relu)[0]
    y64.backward(dy.double().cpu())
    rtol, atol = TOL[dtype]
    scale = x64.grad.abs().max().item()
    torch.testing.assert_close(dx.cpu().double(), x64.grad, rtol=rtol, atol=atol * scale)
    g_scale = max(w64.grad.abs().max().item(), b64.grad.abs().max().item(), 1.0)
    torch.testing.assert_close(dw.cpu().double(), w64.grad, rtol=1e-4, atol=1e-5 * g_scale)
    torch.testing.assert_close(db.cpu().double(), b64.grad, rtol=1e-4, atol=1e-5 * g_scale)
    assert dx.dtype == dtype and dx.stride() == x.stride()


def test_backward_accepts_dy_in_another_layout(device, poison):
    torch.manual_seed(2)
    x = _make((3, 6, 5, 7), "channels_last", torch.float32, device)
    dy = torch.randn(3, 6, 5, 7, device=device)  # NCHW-contiguous while x is channels-last
    w = torch.rand(6, device=device) + 0.5
    _, stats = launch.forward(x, None, None, w, None, True, 0.1, 1e-5, False)
    dx, _, _ = launch.backward(dy, x, stats, w, True, False)
    dx_ref, _, _ = launch.backward(dy.to(memory_format=torch.channels_last), x, stats, w, True, False)
    assert torch.equal(dx, dx_ref)


def test_stats_are_stable_when_mean_dwarfs_std(device, poison):
    """Shifted sums keep var accurate at mean=1000, std=2 (naive E[x^2]-E[x]^2 in fp32 fails)."""
    torch.manual_seed(3)
    x = _make((4, 3, 9, 11), "contiguous", torch.float32, device, offset=1000.0)
    y, stats = launch.forward(x, None, None, None, None, True, 0.1, 1e-5, False)
    x64 = x.double().cpu()
    var = x64.var([0, 2, 3], unbiased=False)
    torch.testing.assert_close(stats[1].cpu().double(), 1.0 / torch.sqrt(var + 1e-5), rtol=1e-5, atol=0)


def test_constant_channel_gives_zero_variance(device, poison):
    x = torch.full((4, 3, 5), 7.0, device=device)
    y, stats = launch.forward(x, None, None, None, None, True, 0.1, 1e-5, False)
    assert torch.equal(y, torch.zeros_like(y))
    torch.testing.assert_close(stats[1].cpu(), torch.full((3,), 1e-5**-0.5))


def test_results_are_bitwise_deterministic(device):
    torch.manual_seed(4)
    x = _make((5, 6, 7, 9), "contiguous", torch.float32, device)
    dy = torch.randn_like(x)
    runs = []
    for _ in range(2):
        y, stats = launch.forward(x, None, None, None, None, True, 0.1, 1e-5, False)
        runs.append((y, stats, *launch.backward(dy, x, stats, None, True, False)))
    for first, second in zip(*runs):
        assert torch.equal(first, second)


def test_eval_mode_uses_running_statistics(device, poison):
    torch.manual_seed(5)
    x = _make((3, 5, 7, 9), "channels_last", torch.float32, device)
    rm = torch.randn(5, device=device)
    rv = torch.rand(5, device=device) + 0.5
    w, b = torch.randn(5, device=device), torch.randn(5, device=device)
    y, _ = launch.forward(x, rm, rv, w, b, False, 0.1, 1e-3, True)
    y_ref = torch.nn.functional.batch_norm(
        x.double().cpu(), rm.double().cpu(), rv.double().cpu(), w.double().cpu(), b.double().cpu(), False, 0.1, 1e-3
    ).clamp_min(0)
    torch.testing.assert_close(y.cpu().double(), y_ref, rtol=1e-5, atol=1e-5)


def test_poison_exposes_unwritten_outputs(device, poison, monkeypatch):
    """The poison fixture works: a launch plan that skips the last unit leaves NaN behind."""
    import dataclasses

    real = launch.choose_tiles

    def short_plan(v, elem_size, dev):
        t = real(v, elem_size, dev)
        return dataclasses.replace(t, n_units=t.n_units - 1)

    monkeypatch.setattr(launch, "choose_tiles", short_plan)
    x = _make((3, 5, 7, 9), "contiguous", torch.float32, device)
    y, _ = launch.forward(x, None, None, None, None, True, 0.1, 1e-5, False)
    assert torch.isnan(y).any() and not torch.isnan(y).all()


# The benchmark's candidate knobs (V4_CHANGES one at a time, and V4_KNOBS) through a full
# training step, before a GPU run times them. One dtype/ReLU per case keeps this cheap while
# every view kind meets float32 and bfloat16. Units per program are odd in the first three
# cases, so an unrolled step's second unit belongs to the next program and must be masked off.
V4_CASES = [
    ((2, 3, 23, 25), "contiguous", torch.float32, False),  # planes
    ((5, 7, 33), "contiguous", torch.bfloat16, True),  # planes, (N, C, L)
    ((5, 6, 7, 9), "channels_last", torch.float32, True),  # rows
    ((5, 6, 7, 9), "channels_last", torch.bfloat16, False),  # rows16
    ((150, 13), "contiguous", torch.float32, False),  # rows, (N, C): two 8-channel finalizes
    ((3, 4, 2, 3, 5), "channels_last_3d", torch.bfloat16, True),  # rows16
]
# "stages" pipelines loads only when compiled (GPU); the interpreter still runs its tl.range.
# "rows_cap" only changes plans of taller tiles than these (test_launch checks those plans).
V4_SETTINGS = [c for c in [*V4_CHANGES, "v4"] if c != "rows_cap"]


def test_v4_cases_reach_the_unrolled_tail():
    """Guards V4_CASES: in the interpreter's plans (sms=0) some case has an odd number (> 1) of
    units per program and several programs. (A GPU's plans give these tiny shapes one unit per
    program, whose unrolled second unit is the next program's: masked off too.)"""
    odd = []
    for shape, fmt, dtype, _ in V4_CASES:
        v = launch.view_of(launch.make_dense(_make(shape, fmt, dtype, "cpu")))
        kind = launch.view_kind(v, dtype.itemsize)
        t = launch.plan_tiles(v, dtype.itemsize, 0, V4_KNOBS[kind])
        odd.append(t.units_per_prog % 2 == 1 and t.units_per_prog > 1 and t.split > 1)
    assert sum(odd) >= 2


@pytest.mark.parametrize("shape,fmt,dtype,relu", V4_CASES)
@pytest.mark.parametrize("change", V4_SETTINGS)
def test_v4_knobs_match_float64(shape, fmt, dtype, relu, change, device, poison, monkeypatch):
    monkeypatch.setattr(launch, "KNOBS", knobs_with(change))
    torch.manual_seed(6)
    x = _make(shape, fmt, dtype, device, offset=3.0)
    C = shape[1]
    w, b = torch.randn(C, device=device), torch.randn(C, device=device)
    rm, rv = torch.randn(C, device=device), torch.rand(C, device=device) + 0.5
    dy = torch.randn(shape, device=device).to(dtype)
    x64 = x.double().cpu().requires_grad_()
    w64 = w.double().cpu().requires_grad_()
    b64 = b.double().cpu().requires_grad_()
    rm64, rv64 = rm.double().cpu(), rv.double().cpu()
    y64 = torch.nn.functional.batch_norm(x64, rm64, rv64, w64, b64, True, 0.1, 1e-5)
    y64 = y64.clamp_min(0) if relu else y64
    y64.backward(dy.double().cpu())

    y, stats = launch.forward(launch.make_dense(x), rm, rv, w, b, True, 0.1, 1e-5, relu)
    dx, dw, db = launch.backward(dy, launch.make_dense(x), stats, w, True, relu)
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(y.cpu().double(), y64.detach(), rtol=rtol, atol=atol)
    torch.testing.assert_close(dx.cpu().double(), x64.grad, rtol=rtol, atol=atol * x64.grad.abs().max().item())
    g_scale = max(w64.grad.abs().max().item(), b64.grad.abs().max().item(), 1.0)
    for got, want in ((dw, w64.grad), (db, b64.grad)):
        torch.testing.assert_close(got.cpu().double(), want, rtol=1e-4, atol=1e-5 * g_scale)
    for got, want in ((rm, rm64), (rv, rv64)):
        torch.testing.assert_close(got.cpu().double(), want, rtol=1e-5, atol=1e-5)
    assert y.stride() == x.stride() and dx.stride() == x.stride()


@pytest.mark.parametrize("block,block_p", [(8, 256), (32, 64)])
def test_finalize_at_gpu_block_sizes(block, block_p, device, poison):
    """The finalize kernel with the GPU's partial-row blocks (the interpreter's plans use 2):
    300 partial rows = one full [block_p, block] load and a masked tail; 13 channels."""
    from normlab.kernels import triton_bn as k

    torch.manual_seed(7)
    C, split, M = 13, 300, 300 * 50
    x = torch.randn(4, C, device=device) * 3.0  # row 0 holds the shifts K
    part = torch.randn(2, split, C, device=device)
    part[1] = part[1].abs() * 50.0 + 100.0  # sums of squares: var stays positive
    w, bias = torch.randn(C, device=device), torch.randn(C, device=device)
    rm, rv = torch.randn(C, device=device), torch.rand(C, device=device) + 0.5
    rm64, rv64 = rm.double().cpu(), rv.double().cpu()
    stats = torch.empty(4, C, device=device)
    k._finalize_kernel[(-(-C // block),)](
        x,
        part,
        w,
        bias,
        rm,
        rv,
        stats,
        C,
        1,
        split,
        float(M),
        0.1,
        1e-5,
        M / (M - 1),
        HAS_W=True,
        HAS_B=True,
        UPDATE_RUNNING=True,
        BLOCK=block,
        BLOCK_P=block_p,
    )
    s1, s2 = part.double().cpu().sum(1)
    d_mean = s1 / M
    mean = x[0].double().cpu() + d_mean
    var = s2 / M - d_mean**2
    invstd = 1.0 / torch.sqrt(var + 1e-5)
    a = w.double().cpu() * invstd
    want = torch.stack([mean, invstd, a, bias.double().cpu() - mean * a])
    torch.testing.assert_close(stats.cpu().double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rm.cpu().double(), 0.9 * rm64 + 0.1 * mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rv.cpu().double(), 0.9 * rv64 + 0.1 * var * M / (M - 1), rtol=1e-5, atol=1e-5)
