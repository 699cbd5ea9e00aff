"""normlab's BatchNorm1d/2d/3d under torch's own tools and transforms, against torch's BN.

Each tool runs on a normlab layer and on torch's layer with the same state; the results must
agree (or both fail the same way), on both normlab implementations that run on CPU.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.ao.quantization import fuse_modules
from torch.func import functional_call, grad, jacrev, replace_all_batch_norm_modules_, vmap
from torch.optim.swa_utils import update_bn

from normlab.layers import BatchNorm1d, BatchNorm2d, BatchNorm3d, functional
from normlab.layers.surgery import FUSER_METHODS

IMPLS = ["reference", "torch"]
F64 = torch.float64
CLOSE = dict(rtol=1e-10, atol=1e-10)


def _pair(impl, channels=3, **kw):
    """(normlab BatchNorm2d, torch BatchNorm2d) with the same non-trivial state, float64."""
    theirs = nn.BatchNorm2d(channels, dtype=F64, **kw)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if theirs.weight is not None:
            theirs.weight.copy_(torch.rand(channels, generator=g, dtype=F64) + 0.5)
        if theirs.bias is not None:
            theirs.bias.copy_(torch.randn(channels, generator=g, dtype=F64))
        if theirs.running_mean is not None:
            theirs.running_mean.copy_(torch.randn(channels, generator=g, dtype=F64))
            theirs.running_var.copy_(torch.rand(channels, generator=g, dtype=F64) + 0.5)
    ours = BatchNorm2d(channels, dtype=F64, impl=impl, **kw)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _x(shape=(6, 3, 2, 2), seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=F64) * 2 + 1


def _assert_trees_close(got, want):
    if isinstance(want, dict):
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], **CLOSE)
    else:
        torch.testing.assert_close(got, want, **CLOSE)


# --- torch sees a batch norm ------------------------------------------------------------------


def test_subclasses_of_torch_classes():
    for ours, theirs in [(BatchNorm1d, nn.BatchNorm1d), (BatchNorm2d, nn.BatchNorm2d),
                         (BatchNorm3d, nn.BatchNorm3d)]:  # fmt: skip
        assert issubclass(ours, theirs)
        assert isinstance(ours(4), nn.modules.batchnorm._BatchNorm)


@pytest.mark.parametrize("impl", IMPLS)
def test_swa_update_bn_recomputes_running_stats(impl):
    ours, theirs = _pair(impl)
    loader = [_x(seed=s) for s in range(3)]
    update_bn(loader, nn.Sequential(ours))
    update_bn(loader, nn.Sequential(theirs))
    for name, buf in theirs.named_buffers():
        torch.testing.assert_close(getattr(ours, name), buf, **CLOSE)
    assert ours.num_batches_tracked.item() == 3 and ours.momentum == 0.1  # restored


@pytest.mark.parametrize("impl", IMPLS)
def test_fuse_modules_folds_conv_and_bn(impl):
    ours, theirs = _pair(impl)
    conv = nn.Conv2d(2, 3, 3, dtype=F64)
    model = nn.Sequential(copy.deepcopy(conv), ours, nn.ReLU()).eval()
    reference = nn.Sequential(copy.deepcopy(conv), theirs, nn.ReLU()).eval()
    x = _x((2, 2, 5, 5))
    config = {"additional_fuser_method_mapping": FUSER_METHODS}
    fused = fuse_modules(model, [["0", "1", "2"]], fuse_custom_config_dict=config)
    fused_ref = fuse_modules(reference, [["0", "1", "2"]])
    assert type(fused[0]) is type(fused_ref[0]) and isinstance(fused[1], nn.Identity)
    torch.testing.assert_close(fused(x), fused_ref(x), **CLOSE)
    torch.testing.assert_close(fused(x), model(x), **CLOSE)


@pytest.mark.parametrize("impl", IMPLS)
def test_torch_convert_sync_batchnorm_converts_them(impl):
    ours, _ = _pair(impl)
    model = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 3, 1), ours))
    assert type(model[1]) is nn.SyncBatchNorm
    for key, value in ours.state_dict().items():
        assert torch.equal(model[1].state_dict()[key], value), key


@pytest.mark.parametrize("impl", IMPLS)
def test_replace_all_batch_norm_modules_then_vmap(impl):
    # Per-sample gradients in training mode: torch's recipe drops the running statistics.
    ours, theirs = _pair(impl)
    for bn in (ours, theirs):
        replace_all_batch_norm_modules_(bn)
    assert ours.running_mean is None and not ours.track_running_stats
    x = _x((5, 3, 2, 2))

    def per_sample_grads(bn):
        params = dict(bn.named_parameters())

        def loss(p, xi):  # xi: (C, H, W), one sample; BN over its H*W values per channel
            return functional_call(bn, p, (xi.unsqueeze(0),)).sin().sum()

        return vmap(grad(loss), in_dims=(None, 0))(params, x)

    _assert_trees_close(per_sample_grads(ours), per_sample_grads(theirs))


# --- torch.func transforms --------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["eval", "train_no_stats"])
def test_grad_vmap_and_functional_call_match_torch(impl, mode):
    kw = {} if mode == "eval" else {"track_running_stats": False}
    ours, theirs = _pair(impl, **kw)
    ours.train(mode != "eval")
    theirs.train(mode != "eval")
    x = _x()

    def run(bn):
        params = dict(bn.named_parameters())
        buffers = dict(bn.named_buffers())

        def loss(p, x):
            return functional_call(bn, (p, buffers), (x,)).sin().sum()

        def sample_loss(p, xi):
            return loss(p, xi.unsqueeze(0))

        return {
            "grad_x": grad(lambda x: bn(x).sin().sum())(x),
            "grad_params": grad(loss)(params, x),
            "vmap": vmap(lambda xi: bn(xi.unsqueeze(0)).squeeze(0))(x),
            "per_sample": vmap(grad(sample_loss), in_dims=(None, 0))(params, x),
            "hessian_x": jacrev(jacrev(lambda x: bn(x).sin().sum()))(x[:2, :, :1, :1]),
        }

    got, want = run(ours), run(theirs)
    for key in want:
        _assert_trees_close(got[key], want[key])


@pytest.mark.parametrize("impl", IMPLS)
def test_training_with_running_stats_under_transforms_fails_as_torch(impl):
    # The in-place running-statistics update cannot run under grad or vmap, in torch's BN as
    # in ours: both refuse with a RuntimeError (never a silently wrong buffer).
    ours, theirs = _pair(impl)
    x = _x()
    for bn in (ours, theirs):
        with pytest.raises(RuntimeError):
            grad(lambda x, bn=bn: bn(x).sum())(x)
        with pytest.raises(RuntimeError, match="replace_all_batch_norm_modules_|running_mean"):
            vmap(lambda xi, bn=bn: bn(xi.unsqueeze(0)))(x)
    assert torch.equal(ours.running_mean, theirs.running_mean)


def test_reference_vmap_refusal_names_the_fix():
    bn = BatchNorm2d(3, impl="reference")
    with pytest.raises(RuntimeError, match="replace_all_batch_norm_modules_"):
        vmap(lambda xi: bn(xi.unsqueeze(0)))(torch.randn(4, 3, 2, 2))


# --- torch's constructor, zero-size batches, errors --------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_bias_false_like_torch(impl):
    ours, theirs = _pair(impl, bias=False)
    assert ours.bias is None and ours.weight is not None
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert repr(ours).replace(f", impl='{impl}'", "") == repr(theirs)
    x = _x().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    ours(x).sin().sum().backward()
    theirs(x_ref).sin().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, **CLOSE)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, **CLOSE)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(0, 3, 2, 2), (2, 3, 0, 2)])
def test_zero_size_batch_like_torch(impl, shape):
    ours, theirs = _pair(impl)
    for mode in (True, False):
        ours.train(mode)
        theirs.train(mode)
        x = torch.zeros(shape, dtype=F64, requires_grad=True)
        y = ours(x)
        y_ref = theirs(x)
        assert y.shape == y_ref.shape == shape
        y.sum().backward()
        assert torch.equal(ours.weight.grad, torch.zeros(3, dtype=F64))
        for name, buf in theirs.named_buffers():
            assert torch.equal(getattr(ours, name), buf), name
    assert ours.num_batches_tracked.item() == 1  # the training step counted, as torch


@pytest.mark.parametrize("training", [True, False])
def test_error_types_and_moments_like_torch(training):
    # Channels: torch raises RuntimeError; ours is a RuntimeError and a ValueError.
    for bn in (BatchNorm2d(3), nn.BatchNorm2d(3)):
        with pytest.raises(RuntimeError):
            bn.train(training)(torch.randn(2, 5, 2, 2))
    with pytest.raises(functional.BatchNormChannelError, match="expected 3 channels"):
        BatchNorm2d(3).train(training)(torch.randn(2, 5, 2, 2))
    # eps: accepted by the constructor, checked by forward (> 0 training, >= 0 eval).
    for eps in (0.0, -1.0):
        ours, theirs = BatchNorm2d(3, eps=eps).train(training), nn.BatchNorm2d(3, eps=eps)
        theirs.train(training)
        x = torch.randn(2, 3, 2, 2)
        refused = training or eps < 0
        for bn in (ours, theirs):
            if refused:
                with pytest.raises(ValueError, match="eps must be"):
                    bn(x)
            else:
                bn(x)
    # One value per channel in training: ValueError, as torch.
    for bn in (BatchNorm2d(3), nn.BatchNorm2d(3)):
        if training:
            with pytest.raises(ValueError, match="more than 1 value per channel"):
                bn(torch.randn(1, 3, 1, 1))
        else:
            bn.eval()(torch.randn(1, 3, 1, 1))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_module_gradgradcheck(impl, training, affine):
    ours, _ = _pair(impl, affine=affine)
    ours.train(training)
    params = list(ours.parameters())

    def fn(x, *ps):
        # Running statistics restored on each call: gradgradcheck calls fn many times.
        state = {k: v.clone() for k, v in ours.named_buffers()}
        out = functional_call(ours, ({n: p for n, p in zip(["weight", "bias"], ps)}, state), (x,))
        return out

    x = _x((3, 3, 2, 1)).requires_grad_()
    weights = [p.detach().clone().requires_grad_() for p in params]
    assert torch.autograd.gradgradcheck(fn, (x, *weights))
