"""GroupNorm/LayerNorm/InstanceNorm/RMSNorm: float64 math, torch modules and the identities."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normlab.layers import GroupNorm, InstanceNorm, LayerNorm, RMSNorm
from normlab.layers.norms import default_num_groups

TOL = dict(rtol=1e-10, atol=1e-10)
SHAPES = [(3, 8), (3, 8, 5), (2, 8, 3, 4), (2, 8, 2, 2, 3)]


def _x(shape, offset=0.0):
    g = torch.Generator().manual_seed(len(shape))
    return torch.randn(shape, generator=g, dtype=torch.float64) * 2 + offset


def _randomize(module):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


@pytest.mark.parametrize("shape", SHAPES)
def test_group_norm_matches_float64_math(shape):
    gn = _randomize(GroupNorm(8, num_groups=4, dtype=torch.float64))
    x = _x(shape, offset=3.0)
    groups = x.reshape(shape[0], 4, -1)  # (N, G, C/G * prod(*))
    mean = groups.mean(-1, keepdim=True)
    var = groups.var(-1, unbiased=False, keepdim=True)
    xhat = ((groups - mean) / torch.sqrt(var + gn.eps)).reshape(shape)
    view = [1, 8] + [1] * (len(shape) - 2)
    want = xhat * gn.weight.view(view) + gn.bias.view(view)
    torch.testing.assert_close(gn(x), want, **TOL)


@pytest.mark.parametrize("shape", SHAPES[1:])
def test_group_norm_one_group_equals_layer_norm_over_c_and_spatial(shape):
    x = _x(shape)
    gn = GroupNorm(8, num_groups=1, affine=False, dtype=torch.float64)
    ln = nn.LayerNorm(shape[1:], elementwise_affine=False, dtype=torch.float64)
    torch.testing.assert_close(gn(x), ln(x), **TOL)
    torch.testing.assert_close(LayerNorm(8, affine=False, dtype=torch.float64)(x), ln(x), **TOL)


def test_layer_norm_on_features_acts_over_c():
    x = _x((5, 8))
    ours = _randomize(LayerNorm(8, dtype=torch.float64))
    theirs = nn.LayerNorm(8, dtype=torch.float64)
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), theirs(x), **TOL)


@pytest.mark.parametrize("shape", [(3, 8, 5), (2, 8, 3, 4), (2, 8, 2, 2, 3)])
def test_group_norm_c_groups_equals_instance_norm(shape):
    x = _x(shape)
    torch_cls = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d, 5: nn.InstanceNorm3d}[len(shape)]
    theirs = torch_cls(8, affine=True, dtype=torch.float64)
    _randomize(theirs)
    gn = GroupNorm(8, num_groups=8, dtype=torch.float64)
    ours = InstanceNorm(8, dtype=torch.float64)
    gn.load_state_dict(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(gn(x), theirs(x), **TOL)
    torch.testing.assert_close(ours(x), theirs(x), **TOL)


def test_instance_norm_rejects_features_clearly():
    with pytest.raises(ValueError, match="instance norm needs spatial dims"):
        InstanceNorm(8)(torch.randn(4, 8))


@pytest.mark.parametrize("shape", SHAPES)
def test_rms_norm_matches_float64_math(shape):
    rms = _randomize(RMSNorm(8, dtype=torch.float64))
    x = _x(shape, offset=1.0)
    dims = tuple(range(1, len(shape)))
    view = [1, 8] + [1] * (len(shape) - 2)
    want = x / torch.sqrt((x**2).mean(dims, keepdim=True) + rms.eps) * rms.weight.view(view)
    torch.testing.assert_close(rms(x), want, **TOL)
    assert rms.bias is None


@pytest.mark.parametrize("shape", SHAPES)
def test_rms_norm_equals_layer_norm_without_bias_on_zero_mean_input(shape):
    x = _x(shape)
    dims = tuple(range(1, len(shape)))
    x = x - x.mean(dims, keepdim=True)  # zero mean per sample over (C, *)
    rms = _randomize(RMSNorm(8, eps=1e-5, dtype=torch.float64))
    ln = LayerNorm(8, eps=1e-5, dtype=torch.float64)
    with torch.no_grad():
        ln.weight.copy_(rms.weight)  # bias stays 0
    torch.testing.assert_close(rms(x), ln(x), **TOL)


def test_rms_norm_low_precision_returns_input_dtype():
    x = torch.randn(4, 8, 3)
    y = RMSNorm(8)(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), RMSNorm(8)(x), atol=3e-2, rtol=0)


def test_default_num_groups_is_largest_divisor_up_to_32():
    assert [default_num_groups(c) for c in (1, 6, 32, 48, 64, 100, 37)] == [1, 6, 32, 24, 32, 25, 1]
    assert GroupNorm(64).num_groups == 32


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="num_groups must be a positive divisor of num_channels=8"):
        GroupNorm(8, num_groups=3)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 8, \*\)"):
        GroupNorm(8)(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 8, \*\)"):
        RMSNorm(8)(torch.randn(2, 4))
