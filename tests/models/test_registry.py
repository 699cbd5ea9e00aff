import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normlab.models import build_model, model_names

SIGNAL, IMAGE, GRAY = (1, 40), (3, 32, 32), (1, 28, 28)


def _one_step(model, shape, batch=4, classes=10):
    x = torch.randn(batch, *shape)
    y = torch.randint(0, classes, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = sum(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert changed == len(before), "every parameter must receive a gradient"


def test_names():
    assert model_names() == ["cnn", "mlp", "resnet18", "resnet20", "vgg11"]


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet20", "resnet18", "vgg11"])
@pytest.mark.parametrize("norm", ["none", "batch", "group", "layer", "batch_renorm"])
def test_every_model_and_norm_steps_on_mnist1d_shape(name, norm):
    torch.manual_seed(0)
    _one_step(build_model(name, SIGNAL, 10, norm=norm), SIGNAL)


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet20", "resnet18", "vgg11"])
@pytest.mark.parametrize("shape", [IMAGE, GRAY])
def test_every_model_steps_on_image_shapes(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 10, norm="batch", norm_position="after_act", activation="gelu")
    _one_step(model, shape, batch=2)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "gelu"])
def test_activation_is_used(activation):
    model = build_model("mlp", SIGNAL, 10, activation=activation)
    kinds = {type(m).__name__.lower() for m in model.modules()}
    assert activation in kinds


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match=r"unknown model 'lenet'.*'cnn', 'mlp'"):
        build_model("lenet", SIGNAL, 10)
    with pytest.raises(ValueError, match=r"unknown activation 'tanh'.*gelu"):
        build_model("mlp", SIGNAL, 10, activation="tanh")
    with pytest.raises(ValueError, match=r"norm_position 'middle'.*before_act"):
        build_model("mlp", SIGNAL, 10, norm_position="middle")
    with pytest.raises(ValueError, match="unknown norm"):
        build_model("mlp", SIGNAL, 10, norm="weird")


def test_hidden_is_checked_per_model():
    assert [b.linear.out_features for b in build_model("mlp", SIGNAL, 10, hidden=[100, 100]).blocks] == [100, 100]
    assert build_model("cnn", SIGNAL, 10, hidden=[8]).blocks[0].conv.out_channels == 8
    with pytest.raises(ValueError, match=r"hidden=\[channels\]"):
        build_model("cnn", SIGNAL, 10, hidden=[8, 8])
    with pytest.raises(ValueError, match="fixed widths"):
        build_model("resnet20", IMAGE, 10, hidden=[8])


def test_init_scale_multiplies_weights_only():
    torch.manual_seed(0)
    base = build_model("cnn", SIGNAL, 10, norm="batch")
    torch.manual_seed(0)
    scaled = build_model("cnn", SIGNAL, 10, norm="batch", init_scale=3.0)
    for (name, p), q in zip(base.named_parameters(), scaled.parameters()):
        factor = 3.0 if name.endswith("weight") and ".norm." not in name else 1.0
        torch.testing.assert_close(q, p * factor, msg=name)
    with pytest.raises(ValueError, match="init_scale must be > 0"):
        build_model("mlp", SIGNAL, 10, init_scale=0.0)


@pytest.mark.parametrize("name", ["cnn", "resnet20", "vgg11"])
def test_conv_bias_is_dropped_only_before_a_norm_with_a_shift(name):
    def conv_biases(norm, position="before_act"):
        model = build_model(name, SIGNAL, 10, norm=norm, norm_position=position)
        return [m.bias is not None for m in model.modules() if isinstance(m, nn.Conv1d)]

    assert not any(conv_biases("batch"))  # BN's beta replaces every conv bias
    assert all(conv_biases("none"))
    # RMSNorm has no beta: without the conv bias the features would have no shift at all
    assert all(conv_biases("rms"))
    assert all(conv_biases("rms", "after_act"))


def test_rank_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(C, L\) or \(C, H, W\).*model='mlp'"):
        build_model("cnn", (40,), 10)
