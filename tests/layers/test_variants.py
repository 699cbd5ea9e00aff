"""GhostBatchNorm and BatchRenorm against torch BN and their definitions."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normlab.layers import BatchRenorm, GhostBatchNorm

TOL = dict(rtol=1e-10, atol=1e-10)
F64 = dict(dtype=torch.float64)


def _x(shape, seed=0, scale=2.0, offset=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, **F64) * scale + offset).requires_grad_()


def _randomize_affine(*modules):
    g = torch.Generator().manual_seed(3)
    w = torch.rand(modules[0].num_features, generator=g, **F64) + 0.5
    b = torch.randn(modules[0].num_features, generator=g, **F64)
    with torch.no_grad():
        for m in modules:
            m.weight.copy_(w)
            m.bias.copy_(b)


# --- Ghost batch norm --------------------------------------------------------------------


def test_ghost_with_one_virtual_batch_is_batch_norm():
    ours, theirs = GhostBatchNorm(3, virtual_batch_size=8, **F64), nn.BatchNorm1d(3, **F64)
    _randomize_affine(ours, theirs)
    for step in range(3):
        x = _x((8, 3, 4), seed=step)
        x_ref = x.detach().clone().requires_grad_()
        y, y_ref = ours(x), theirs(x_ref)
        torch.testing.assert_close(y, y_ref, **TOL)
        y.sum().backward()
        y_ref.sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad, **TOL)
    for name, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value, **TOL)


@pytest.mark.parametrize("sizes", [[4, 4, 4], [4, 4, 3], [4, 5]])
def test_ghost_normalizes_each_virtual_batch_alone(sizes):
    # N = sum(sizes); (9, C) with vbs 4 gives [4, 5]: a 1-sample last chunk joins the previous.
    n = sum(sizes)
    ours = GhostBatchNorm(3, virtual_batch_size=4, momentum=0.5, **F64)
    weight, bias = nn.Parameter(torch.rand(3, **F64) + 0.5), nn.Parameter(torch.randn(3, **F64))
    with torch.no_grad():
        ours.weight.copy_(weight)
        ours.bias.copy_(bias)
    shape = (n, 3) if sizes == [4, 5] else (n, 3, 2)
    x = _x(shape)
    x_ref = x.detach().clone().requires_grad_()
    chunks = x_ref.split(sizes)
    want = torch.cat([F.batch_norm(c, None, None, weight, bias, True) for c in chunks])
    y = ours(x)
    torch.testing.assert_close(y, want, **TOL)
    dy = torch.randn_like(y)
    y.backward(dy)
    want.backward(dy)
    torch.testing.assert_close(x.grad, x_ref.grad, **TOL)
    torch.testing.assert_close(ours.weight.grad, weight.grad, **TOL)
    # One update per call, from the mean over chunks of mean and unbiased variance.
    dims = [0, *range(2, x.dim())]
    chunk_means = torch.stack([c.detach().mean(dims) for c in chunks]).mean(0)
    chunk_vars = torch.stack([c.detach().var(dims, unbiased=True) for c in chunks]).mean(0)
    torch.testing.assert_close(ours.running_mean, 0.5 * chunk_means, **TOL)
    torch.testing.assert_close(ours.running_var, 0.5 + 0.5 * chunk_vars, **TOL)
    assert ours.num_batches_tracked.item() == 1


def test_ghost_eval_uses_running_stats():
    ours = GhostBatchNorm(3, virtual_batch_size=2, **F64)
    ours(_x((8, 3)))
    theirs = nn.BatchNorm1d(3, **F64)
    theirs.load_state_dict(ours.state_dict())
    x = _x((8, 3), seed=5)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), **TOL)


def test_ghost_rejects_bad_virtual_batch_size():
    with pytest.raises(ValueError, match="virtual_batch_size must be an int >= 2"):
        GhostBatchNorm(3, virtual_batch_size=1)


# --- Batch renormalization ---------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 3, 3)])
def test_renorm_with_rmax_1_dmax_0_is_batch_norm(shape, momentum):
    ours = BatchRenorm(3, r_max=1.0, d_max=0.0, momentum=momentum, **F64)
    theirs = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}[len(shape)](3, momentum=momentum, **F64)
    _randomize_affine(ours, theirs)
    for step, mode in enumerate(["train", "train", "eval", "train"]):
        ours.train(mode == "train")
        theirs.train(mode == "train")
        x = _x(shape, seed=step, offset=step)
        x_ref = x.detach().clone().requires_grad_()
        y, y_ref = ours(x), theirs(x_ref)
        torch.testing.assert_close(y, y_ref, **TOL)
        dy = torch.randn_like(y)
        y.backward(dy)
        y_ref.backward(dy)
        torch.testing.assert_close(x.grad, x_ref.grad, **TOL)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, **TOL)
    for name, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value, **TOL)


def _renorm_with_running_stats(r_max, d_max):
    brn = BatchRenorm(3, r_max=r_max, d_max=d_max, momentum=0.1, **F64)
    with torch.no_grad():
        brn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0], **F64))
        brn.running_var.copy_(torch.tensor([2.0, 0.5, 4.0], **F64))
    return brn


def test_renorm_unclipped_training_output_equals_running_stat_output():
    # r = sigma_B/sigma and d = (mu_B - mu)/sigma unclipped turn the batch normalization into
    # (x - mu)/sigma: training output equals the eval output with the pre-step statistics.
    brn = _renorm_with_running_stats(r_max=100.0, d_max=100.0)
    frozen = copy.deepcopy(brn).eval()
    x = _x((16, 3, 4))
    y = brn(x)
    torch.testing.assert_close(y, frozen(x.detach()), **TOL)
    # ...but unlike eval mode, the gradient goes through the batch statistics:
    # sum_n dL/dx = 0 per channel for L = sum(y), as in BN.
    y.sum().backward()
    torch.testing.assert_close(x.grad.sum((0, 2)), torch.zeros(3, **F64), rtol=0, atol=1e-10)
    assert brn.num_batches_tracked.item() == 1


def test_renorm_clips_r_and_d():
    brn = _renorm_with_running_stats(r_max=1.5, d_max=0.25)
    x = _x((32, 3), scale=10.0, offset=5.0)  # batch std >> running std, mean far away
    y = brn(x)
    mean, var = x.detach().mean(0), x.detach().var(0, unbiased=False)
    xhat = (x.detach() - mean) / torch.sqrt(var + brn.eps)
    want = (xhat * 1.5 + 0.25) * brn.weight.detach() + brn.bias.detach()  # r, d at their limits
    torch.testing.assert_close(y, want, **TOL)


def test_renorm_warmup_ramps_limits():
    brn = BatchRenorm(3, r_max=3.0, d_max=4.0, warmup_steps=10)
    assert [t.item() for t in brn.limits()] == [1.0, 0.0]
    brn.num_batches_tracked.fill_(5)
    assert [t.item() for t in brn.limits()] == [2.0, 2.0]
    brn.num_batches_tracked.fill_(50)
    assert [t.item() for t in brn.limits()] == [3.0, 4.0]


def test_renorm_rejects_bad_limits():
    with pytest.raises(ValueError, match="r_max must be >= 1"):
        BatchRenorm(3, r_max=0.5)
    with pytest.raises(ValueError, match="d_max must be >= 0"):
        BatchRenorm(3, d_max=-1.0)
