import pytest
import torch
from torch import nn

from normlab.models import BasicBlock, ResNet


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_the_published_networks():
    # ResNet-18 (CIFAR variant, e.g. kuangliu/pytorch-cifar): 11,173,962 parameters
    assert _count(ResNet("resnet18", (3, 32, 32), 10)) == 11_173_962
    # ResNet-20: He et al. report 0.27M; projection shortcuts add a few 1x1 convs
    assert 265_000 < _count(ResNet("resnet20", (3, 32, 32), 10)) < 280_000


def test_stage_shapes_and_1d_version():
    model = ResNet("resnet20", (3, 32, 32), 10)
    h = model.stages(model.stem(torch.randn(2, 3, 32, 32)))
    assert h.shape == (2, 64, 8, 8)
    model1d = ResNet("resnet20", (1, 40), 10)
    assert not any(isinstance(m, nn.Conv2d) for m in model1d.modules())
    assert model1d(torch.randn(2, 1, 40)).shape == (2, 10)


def test_identity_block_is_residual():
    # with the main branch zeroed, a block is act(x) of its input
    model = ResNet("resnet20", (3, 8, 8), 10, norm="none")
    block = model.stages[0][1]
    nn.init.zeros_(block.conv2.weight)
    nn.init.zeros_(block.conv2.bias)
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(block(x), x.relu())


def test_bad_variant_and_norm_position_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown ResNet variant 'resnet50'.*'resnet18', 'resnet20'"):
        ResNet("resnet50", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="norm_position 'middle'"):
        BasicBlock(2, 4, 4, 1, norm="batch", norm_kwargs=None, norm_position="middle", activation="relu")
