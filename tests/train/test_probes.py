import numpy as np
import torch

from normlab.models import build_model
from normlab.train import ActivationProbe, grad_norms, tracked_units, weight_norms
from normlab.train import metrics as M


def test_tracked_units():
    assert tracked_units(512, 3) == [0, 256, 511]
    assert tracked_units(2, 3) == [0, 1]
    assert tracked_units(10, 1) == [0]


def test_activation_probe_values_and_shapes():
    torch.manual_seed(0)
    model = build_model("cnn", (1, 40), 10, hidden=[6], norm="batch")
    probe = ActivationProbe(model, units=2)
    x = torch.randn(8, 1, 40)
    model(x)
    assert probe.collect() == {}  # not armed: nothing recorded
    probe.armed = True
    model(x)
    values = probe.collect()
    assert not probe.armed
    layers = ["blocks.0.act", "blocks.1.act", "blocks.2.act"]
    expected_keys = set()
    for layer in layers:
        expected_keys |= {M.act_key(layer, "mean"), M.act_key(layer, "std")}
        expected_keys |= {M.act_unit_key(layer, u, p) for u in (0, 5) for p in M.PERCENTILES}
    assert {k for k in values if ".act/" in k} == expected_keys
    # independent computation: the first block's norm output is the activation's input
    h = model.blocks[0].norm(model.blocks[0].conv(x)).detach().double()  # (8, 6, 19)
    torch.testing.assert_close(values["act/blocks.0.act/mean"], h.mean().item(), atol=1e-6, rtol=0)
    torch.testing.assert_close(values["act/blocks.0.act/std"], h.std(unbiased=False).item(), atol=1e-5, rtol=0)
    unit5 = h[:, 5].flatten().numpy()
    import numpy as np

    for p in M.PERCENTILES:
        torch.testing.assert_close(
            values[f"act/blocks.0.act/u5/p{p}"], float(np.percentile(unit5, p)), atol=1e-5, rtol=0
        )
    probe.remove()
    probe.armed = True
    model(x)
    assert probe.collect() == {}


def test_activation_probe_reads_what_the_norm_receives_before_normalization():
    """After BN every unit's batch mean is ~0 by construction; the Linear output (the input
    of the norm) is what can drift: the probe records it under the Linear's name."""
    torch.manual_seed(0)
    model = build_model("mlp", (1, 40), 10, hidden=[16, 16], norm="batch")
    probe = ActivationProbe(model, units=1)
    x = torch.randn(32, 1, 40) + 3.0
    probe.armed = True
    model(x)
    values = probe.collect()
    pre = model.blocks[1].linear(model.blocks[0](x.flatten(1))).detach().double()  # (32, 16)
    torch.testing.assert_close(values["act/blocks.1.linear/mean"], pre.mean().item(), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        values["act/blocks.1.linear/u0/p50"], float(np.percentile(pre[:, 0].numpy(), 50)), atol=1e-5, rtol=0
    )
    assert abs(values["act/blocks.1.act/mean"]) < 1e-5 < abs(values["act/blocks.1.linear/mean"])  # after BN: 0
    assert "act/head/mean" in values  # every Linear/Conv output, the head's too


def test_grad_and_weight_norms():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8), 3, hidden=[4], norm="batch")
    model(torch.randn(5, 1, 8)).square().sum().backward()
    grads = grad_norms(model)
    weights = weight_norms(model)
    names = [n for n, _ in model.named_parameters()]
    assert set(grads) == {f"grad_norm/{n}" for n in names} | {"grad_norm"}
    assert set(weights) == {f"weight_norm/{n}" for n in names}
    all_grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(grads["grad_norm"], all_grads.norm().item(), rtol=1e-5, atol=0)
    torch.testing.assert_close(weights["weight_norm/head.weight"], model.head.weight.norm().item())
