import torch
from torch import nn

from normlab.models import VGG


def test_cifar_vgg11_shape_and_parameter_count():
    model = VGG((3, 32, 32), 10, norm="batch")
    assert model.features(torch.randn(2, 3, 32, 32)).shape == (2, 512, 1, 1)
    # kuangliu/pytorch-cifar VGG11 (conv bias + BN) has 9,231,114; ours drops the 2,752 conv
    # biases that BN makes redundant
    assert sum(p.numel() for p in model.parameters()) == 9_231_114 - 2_752
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512]


def test_small_inputs_skip_pooling():
    model = VGG((1, 28, 28), 10)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 4  # 28 -> 14 -> 7 -> 3 -> 1, the fifth is skipped
    assert VGG((1, 40), 10)(torch.randn(2, 1, 40)).shape == (2, 10)
