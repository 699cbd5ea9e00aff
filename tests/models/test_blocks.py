import pytest
import torch
from torch import nn

from normlab.layers import BatchNorm, RMSNorm
from normlab.models.blocks import (
    conv,
    conv_out,
    make_activation,
    needs_bias,
    norm_act,
    scale_init_,
    spatial_rank,
)


def test_activation_by_name_and_fresh_instances():
    assert isinstance(make_activation("sigmoid"), nn.Sigmoid)
    assert make_activation("relu") is not make_activation("relu")
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        make_activation("swish")


def test_norm_act_order():
    before = norm_act(4, norm="batch", norm_kwargs=None, norm_position="before_act", activation="relu")
    after = norm_act(4, norm="batch", norm_kwargs=None, norm_position="after_act", activation="relu")
    assert [name for name, _ in before] == ["norm", "act"] and isinstance(before[1][1], nn.ReLU)
    assert [name for name, _ in after] == ["act", "norm"] and isinstance(after[0][1], nn.ReLU)


def test_only_a_norm_with_a_shift_replaces_the_bias():
    assert not needs_bias(BatchNorm(4))
    assert needs_bias(BatchNorm(4, affine=False))
    assert needs_bias(RMSNorm(4))  # no beta: dropping the bias would leave no shift at all
    assert needs_bias(nn.Identity()) and needs_bias(nn.ReLU())


@pytest.mark.parametrize("size,kernel,stride,padding", [(40, 5, 2, 1), (19, 3, 2, 1), (32, 3, 1, 1), (7, 3, 2, 0)])
def test_conv_out_matches_torch(size, kernel, stride, padding):
    layer = conv(1, 1, 1, kernel, stride, padding)
    assert layer(torch.zeros(1, 1, size)).shape[-1] == conv_out(size, kernel, stride, padding)


def test_spatial_rank_and_scale():
    assert spatial_rank((1, 40), "cnn") == 1 and spatial_rank((3, 8, 8), "cnn") == 2
    layer = nn.Linear(3, 3)
    weight = layer.weight.detach().clone()
    scale_init_(layer, 0.5)
    torch.testing.assert_close(layer.weight, weight * 0.5)
