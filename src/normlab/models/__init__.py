"""Models for the BN study; every one takes `norm=` (any create_norm name).

`build_model(name, input_shape, num_classes, norm=..., ...)` builds by name; `model_names()`
lists mlp (the seed's), cnn (MNIST-1D paper), resnet20, resnet18 (CIFAR), vgg11.
"""

from normlab.models.cnn import CNN
from normlab.models.mlp import MLP, MNIST1D_MLP_HIDDEN, SEED_MLP_HIDDEN
from normlab.models.registry import build_model, model_names
from normlab.models.resnet import BasicBlock, ResNet
from normlab.models.vgg import VGG

__all__ = [
    "BasicBlock",
    "CNN",
    "MLP",
    "MNIST1D_MLP_HIDDEN",
    "ResNet",
    "SEED_MLP_HIDDEN",
    "VGG",
    "build_model",
    "model_names",
]
