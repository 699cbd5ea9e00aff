"""BN written out by hand agrees with the layers; a real layer is captured without being
changed; gamma = sqrt(var + eps), beta = mean recovers the input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normlab.layers import BatchNorm
from normlab.layers.noisy import NoisyBatchNorm
from normlab.models.mlp import MLP
from normlab.train.bn_anatomy import bn_by_hand, capture_bn, histogram, recovers_input

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_by_hand_on_a_two_value_channel():
    # channel 0: values 1, 3 -> mean 2, biased var 1 -> x_hat = -1, 1 (over sqrt(1 + eps))
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    y, mean, var = bn_by_hand(x, eps=0.0, gamma=torch.tensor([2.0, 1.0]), beta=torch.tensor([0.5, 7.0]))
    assert mean.tolist() == [2.0, 5.0] and var.tolist() == [1.0, 0.0]
    assert y[:, 0].tolist() == [-1.5, 2.5]


@pytest.mark.parametrize("shape", [(16, 4), (8, 4, 5), (4, 4, 3, 3)])
def test_by_hand_matches_torch_and_normlab(shape):
    x = torch.randn(shape, dtype=torch.float64) * 3 + 1
    gamma, beta = torch.rand(4, dtype=torch.float64) + 0.5, torch.randn(4, dtype=torch.float64)
    y, mean, var = bn_by_hand(x, 1e-5, gamma, beta)
    expected = nn.functional.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    bn = BatchNorm(4, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
    torch.testing.assert_close(bn(x), y, rtol=1e-12, atol=1e-12)
    per_channel = x.transpose(0, 1).reshape(4, -1)  # (C, M)
    torch.testing.assert_close(mean, per_channel.mean(1))
    torch.testing.assert_close(var, per_channel.var(1, unbiased=False))


def _trained_mlp(device):
    torch.manual_seed(0)
    model = MLP((1, 10), 3, hidden=[8, 6], norm="batch").to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(20):
        x, y = torch.randn(32, 1, 10, device=device), torch.randint(0, 3, (32,), device=device)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("train", [True, False])
def test_capture_a_real_layer_without_changing_it(device, train):
    model = _trained_mlp(device).train(train)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(32, 1, 10, device=device)
    snap = capture_bn(model, x, "blocks.1.norm")
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert snap.training is train and snap.input.shape == snap.output.shape == (32, 6)
    layer = model.blocks[1].norm
    torch.testing.assert_close(snap.gamma, layer.weight.detach().cpu())
    assert not torch.equal(snap.gamma, torch.ones(6))  # trained, not the init
    if train:  # batch statistics
        expected, _, _ = bn_by_hand(snap.input, snap.eps, snap.gamma, snap.beta)
    else:  # running statistics
        expected = (snap.input.double() - snap.running_mean) / torch.sqrt(snap.running_var + snap.eps)
        expected = expected * snap.gamma + snap.beta
    torch.testing.assert_close(snap.output.double(), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the pre-BN input is what the block's Linear produced
        h = model.blocks[1].linear(model.blocks[0](x.flatten(1)))
    torch.testing.assert_close(snap.input, h.cpu())
    torch.testing.assert_close(snap.batch_mean, snap.input.double().mean(0))


def test_capture_names_the_valid_layers():
    with pytest.raises(ValueError, match="blocks.0.norm, blocks.1.norm"):
        capture_bn(_trained_mlp("cpu"), torch.randn(4, 1, 10), "blocks.1.linear")


@pytest.mark.parametrize("device", DEVICES)
def test_gamma_sqrt_var_beta_mean_recovers_the_input(device):
    model = _trained_mlp(device)
    x = torch.randn(32, 1, 10, device=device)
    snap = capture_bn(model, x, "blocks.0.norm")
    scale = float(snap.input.abs().max())
    assert recovers_input(model.blocks[0].norm, snap.input) < 1e-13 * scale
    # also without affine parameters, and for a frozen layer
    assert recovers_input(BatchNorm(8, affine=False), snap.input) < 1e-13 * scale
    frozen = BatchNorm(8).freeze()
    assert recovers_input(frozen, snap.input) < 1e-13 * scale
    # a layer whose training computation is not plain BN: the identity is checked on plain BN
    assert recovers_input(NoisyBatchNorm(8, seed=0), snap.input) < 1e-13 * scale
    # what makes it work is the *biased* variance: the unbiased one misses by ~1/(2N) relative
    x64 = snap.input.double()
    _, mean, var = bn_by_hand(x64, snap.eps)
    unbiased = var * 32 / 31
    off = (x64 - mean) / torch.sqrt(var + snap.eps) * torch.sqrt(unbiased + snap.eps) + mean
    assert float((off - x64).abs().max()) > 1e-3 * scale


def test_recovers_input_needs_batch_norm():
    with pytest.raises(ValueError, match="needs a batch norm layer, got LayerNorm"):
        recovers_input(nn.LayerNorm(4), torch.randn(4, 4))


def test_histogram():
    counts, edges = histogram(torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]), bins=2)
    assert counts == [2, 3] and edges == [0.0, 0.5, 1.0]
    counts, edges = histogram(torch.full((3,), 2.0), bins=4)  # constant input: one unit range
    assert sum(counts) == 3 and edges[0] == 2.0 and edges[-1] == 3.0
