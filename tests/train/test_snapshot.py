"""train.snapshot.preserved: a measurement leaves the model exactly as it found it."""

import pytest
import torch
from torch import nn

from normlab.layers import BatchNorm1d
from normlab.train.snapshot import preserved


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_parameters_buffers_grads_and_modes_come_back_bit_for_bit():
    model = _model().eval()
    model(torch.randn(16, 4)).sum().backward()  # a .grad to keep
    before, grads = _state(model), [p.grad.clone() for p in model.parameters()]
    tensors = list(model.parameters())
    with preserved(model):
        model.train()
        model(torch.randn(16, 4) * 3 + 1).sum().backward()  # running stats, counters, .grad move
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        assert not torch.equal(model[1].running_mean, before["1.running_mean"])
    after = _state(model)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert not any(m.training for m in model.modules())
    assert all(p is q for p, q in zip(model.parameters(), tensors))  # restored in place


def test_restored_when_the_body_raises():
    model = _model()
    before = _state(model)
    with pytest.raises(RuntimeError, match="probe failed"), preserved(model):
        with torch.no_grad():
            model[0].weight.zero_()
        raise RuntimeError("probe failed")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
