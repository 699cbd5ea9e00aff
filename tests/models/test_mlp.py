import torch
from torch import nn

from normlab.models import MLP, MNIST1D_MLP_HIDDEN


def _torch_reference(in_features, hidden, classes, norm_first=True, act=nn.ReLU):
    layers = [nn.Flatten()]
    for width in hidden:
        pair = [nn.BatchNorm1d(width), act()]
        layers += [nn.Linear(in_features, width), *(pair if norm_first else pair[::-1])]
        in_features = width
    return nn.Sequential(*layers, nn.Linear(in_features, classes))


def _copy(ours: nn.Module, ref: nn.Module) -> None:
    ref_params = [p for p in ref.parameters()]
    for p, q in zip(ours.parameters(), ref_params, strict=True):
        q.data.copy_(p.data)


def test_seed_architecture():
    model = MLP((3, 32, 32), 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3072, 512), (512, 256), (256, 10)]
    assert list(model.blocks[0]._modules) == ["linear", "norm", "act"]
    assert list(MLP((1, 40), 10, norm_position="after_act").blocks[0]._modules) == ["linear", "act", "norm"]
    assert MNIST1D_MLP_HIDDEN == (100, 100)


def test_parity_with_torch_batchnorm_mlp_train_and_eval():
    # the same weights through our MLP (normlab BatchNorm) and a torch.nn reference
    torch.manual_seed(0)
    for norm_first in (True, False):
        ours = MLP(
            (2, 8),
            5,
            hidden=[16, 12],
            norm="batch",
            norm_position="before_act" if norm_first else "after_act",
            activation="sigmoid",
        )
        ref = _torch_reference(16, [16, 12], 5, norm_first, nn.Sigmoid)
        _copy(ours, ref)
        x = torch.randn(32, 2, 8, dtype=torch.float64)
        ours, ref = ours.double(), ref.double()
        out, expected = ours(x), ref(x)
        torch.testing.assert_close(out, expected)
        out.square().sum().backward()
        expected.square().sum().backward()
        for p, q in zip(ours.parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad)
        ours.eval(), ref.eval()
        torch.testing.assert_close(ours(x), ref(x))  # running statistics agree too
