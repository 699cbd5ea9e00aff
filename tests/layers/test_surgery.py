"""fold_batchnorm, recalibrate_bn, freeze_bn/unfreeze_bn and convert_norm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normlab.layers import BatchNorm, BatchNorm1d, BatchNorm2d, GroupNorm, RMSNorm
from normlab.layers.surgery import (
    convert_norm,
    fold_batchnorm,
    freeze_bn,
    recalibrate_bn,
    unfreeze_bn,
)


def _train_a_bit(model, shape, steps=5, seed=0):
    """Give BN non-trivial running statistics and gamma/beta (not 0/1, 1/0)."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "running_mean") and m.weight is not None:
                m.weight.uniform_(0.5, 2.0, generator=g)
                if m.bias is not None:
                    m.bias.uniform_(-1.0, 1.0, generator=g)
        for _ in range(steps):
            model(torch.randn(shape, generator=g) * 3 + 2)
    return model.eval()


def _conv_stack(bn2d=nn.BatchNorm2d):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), bn2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, bias=False, groups=2), bn2d(8), nn.ReLU(),
    )  # fmt: skip


def _assert_same_eval_outputs(model, folded, x):
    want = model.eval()(x)
    got = folded(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("bn2d", [nn.BatchNorm2d, BatchNorm2d, BatchNorm])
def test_fold_conv_bn_relu_stack(bn2d):
    model = _train_a_bit(_conv_stack(bn2d), (4, 3, 6, 6))
    folded = fold_batchnorm(model)
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[4], nn.Identity)
    assert folded[3].bias is not None  # created for the bias-free conv
    assert isinstance(model[1], bn2d)  # the original is untouched
    _assert_same_eval_outputs(model, folded, torch.randn(2, 3, 6, 6) * 3 + 2)


class _MLP(nn.Module):
    """Calls its sub-modules in order from forward (traced with torch.fx)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(5, 7), BatchNorm1d(7)
        self.fc2, self.bn2 = nn.Linear(7, 4), nn.BatchNorm1d(4, affine=False)

    def forward(self, x):
        return self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(x)))))


def test_fold_linear_bn_mlp_module():
    model = _train_a_bit(_MLP(), (16, 5))
    folded = fold_batchnorm(model)
    assert isinstance(folded, _MLP)
    assert isinstance(folded.bn1, nn.Identity) and isinstance(folded.bn2, nn.Identity)
    _assert_same_eval_outputs(model, folded, torch.randn(8, 5) * 3 + 2)


def test_fold_leaves_bn_after_relu_with_warning():
    model = _train_a_bit(nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.BatchNorm1d(6)), (8, 4))
    with pytest.warns(UserWarning, match="left 1 batch norm"):
        folded = fold_batchnorm(model)
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[3], nn.BatchNorm1d)
    _assert_same_eval_outputs(model, folded, torch.randn(5, 4))


def test_fold_does_not_fold_when_the_layer_output_is_used_twice():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.bn = nn.Linear(4, 4), nn.BatchNorm1d(4)

        def forward(self, x):
            h = self.fc(x)
            return self.bn(h) + h  # folding fc would change the skip path

    with pytest.raises(ValueError, match="cannot fold any of the 1 batch norm"):
        fold_batchnorm(_train_a_bit(Residual(), (8, 4)))


def test_fold_untraceable_model_falls_back_to_sequentials():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6))

        def forward(self, x):
            if x.sum() > 0:  # data-dependent: torch.fx cannot trace this
                return self.body(x)
            return self.body(-x)

    model = _train_a_bit(Dynamic(), (8, 4))
    folded = fold_batchnorm(model)
    assert isinstance(folded.body[1], nn.Identity)
    _assert_same_eval_outputs(model, folded, torch.randn(5, 4))


def test_fold_without_running_stats_says_why():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="no running statistics"):
        fold_batchnorm(model)


def test_recalibrate_gives_population_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2), nn.BatchNorm1d(2))
    model.train()
    batches = [torch.randn(8, 3) * (i + 1) + i for i in range(5)]  # shifting distribution
    recalibrate_bn(model, [(x, None) for x in batches])
    assert model[1].num_batches_tracked.item() == 0 and model.training  # restored
    # Expected: statistics of each BN's input over all 40 samples, with BN in training mode.
    inputs = torch.cat([model[0](x) for x in batches])  # (40, 4)
    torch.testing.assert_close(model[1].running_mean, inputs.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model[1].running_var, inputs.var(0, unbiased=True), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        second = torch.cat([model[3](model[2](model[1].train()(model[0](x)))) for x in batches])
    torch.testing.assert_close(model[4].running_mean, second.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model[4].running_var, second.var(0), rtol=1e-5, atol=1e-5)


def test_recalibrate_respects_num_batches_and_errors():
    bn = nn.Sequential(BatchNorm(2))
    batches = [torch.randn(4, 2) + 10 * i for i in range(3)]
    recalibrate_bn(bn, batches, num_batches=1)
    torch.testing.assert_close(bn[0].running_mean, batches[0].mean(0))
    with pytest.raises(ValueError, match="got no batches"):
        recalibrate_bn(bn, [])
    with pytest.raises(TypeError, match="expected batches that are tensors.*forward_fn"):
        recalibrate_bn(bn, [3])

    class OneBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = BatchNorm(2), BatchNorm(2)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(ValueError, match="'unused' was not called .*pass inputs whose forward"):
        recalibrate_bn(OneBranch(), batches)


@pytest.mark.parametrize("bn_cls", [nn.BatchNorm1d, BatchNorm1d])
@pytest.mark.parametrize("freeze_affine", [False, True])
def test_freeze_survives_train_and_unfreeze_restores(bn_cls, freeze_affine):
    model = _train_a_bit(nn.Sequential(nn.Linear(3, 4), bn_cls(4)), (8, 3))
    bn = model[1]
    stats = {k: v.clone() for k, v in bn.state_dict().items()}
    freeze_bn(model, freeze_affine=freeze_affine).train()
    x = torch.randn(8, 3) * 5
    y = model(x)
    expected = (model[0](x) - stats["running_mean"]) / torch.sqrt(stats["running_var"] + bn.eps)
    expected = expected * stats["weight"] + stats["bias"]
    torch.testing.assert_close(y, expected)
    for key, value in bn.state_dict().items():
        assert torch.equal(value, stats[key]), key
    assert bn.weight.requires_grad is not freeze_affine
    unfreeze_bn(model.train())
    model(x)
    assert bn.num_batches_tracked.item() == stats["num_batches_tracked"].item() + 1
    assert bn.weight.requires_grad


def test_freeze_without_running_stats_is_an_error():
    with pytest.raises(ValueError, match="track_running_stats=False"):
        freeze_bn(nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False)))


def test_convert_to_group_keeps_affine():
    model = _train_a_bit(_conv_stack(), (4, 3, 6, 6))
    gamma = model[1].weight.detach().clone()
    converted = convert_norm(model, to="group", num_groups=4)
    assert isinstance(converted[1], GroupNorm) and converted[1].num_groups == 4
    torch.testing.assert_close(converted[1].weight, gamma)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in converted.modules())
    converted(torch.randn(2, 3, 6, 6))


def test_convert_torch_bn_to_normlab_batch_keeps_everything():
    model = _train_a_bit(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), (8, 3))
    x = torch.randn(5, 3)
    want = model(x)
    converted = convert_norm(model, to="batch", impl="reference")
    assert type(converted[1]) is BatchNorm and not converted[1].training
    torch.testing.assert_close(converted(x), want)


def test_convert_to_rms_keeps_gamma_only_and_top_level_bn():
    bn = _train_a_bit(nn.Sequential(nn.BatchNorm1d(4)), (8, 4))[0]
    rms = convert_norm(bn, to="rms")
    assert isinstance(rms, RMSNorm)
    torch.testing.assert_close(rms.weight, bn.weight)


@pytest.mark.parametrize(
    "conv, bn, shape",
    [
        (nn.Conv1d(2, 4, 3), BatchNorm1d(4), (3, 2, 9)),
        (nn.Conv3d(2, 4, 2), nn.BatchNorm3d(4), (3, 2, 4, 4, 4)),
    ],
)
def test_fold_conv1d_and_conv3d(conv, bn, shape):
    model = _train_a_bit(nn.Sequential(conv, bn, nn.ReLU()), shape)
    folded = fold_batchnorm(model)
    assert isinstance(folded[1], nn.Identity)
    _assert_same_eval_outputs(model, folded, torch.randn(shape) * 3 + 2)


class _KeywordModel(nn.Module):
    """Takes its input by keyword, as models fed with dict batches do."""

    def __init__(self):
        super().__init__()
        self.bn = BatchNorm1d(2)

    def forward(self, image, mask=None):
        return self.bn(image if mask is None else image * mask)


def test_recalibrate_takes_dict_batches_and_a_forward_fn():
    batches = [torch.randn(6, 2) * (i + 1) + i for i in range(3)]
    whole = torch.cat(batches)
    model = _KeywordModel()
    recalibrate_bn(model, [{"image": x} for x in batches])
    torch.testing.assert_close(model.bn.running_mean, whole.mean(0))
    torch.testing.assert_close(model.bn.running_var, whole.var(0))
    model = _KeywordModel()
    calls = []

    def forward_fn(m, batch):
        calls.append(batch["id"])
        m(batch["pixels"], mask=torch.ones(1, 2))

    recalibrate_bn(model, [{"pixels": x, "id": i} for i, x in enumerate(batches)],
                   forward_fn=forward_fn)  # fmt: skip
    assert calls == [0, 1, 2]
    torch.testing.assert_close(model.bn.running_var, whole.var(0))


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by an activation in one module, as timm's BatchNormAct2d."""

    def forward(self, x):
        return torch.relu(super().forward(x))


class NormlabBatchNormAct2d(BatchNorm2d):
    def forward(self, x):
        return torch.relu(super().forward(x))


@pytest.mark.parametrize("act_cls", [BatchNormAct2d, NormlabBatchNormAct2d])
def test_bn_activation_subclass_is_never_silently_dropped(act_cls):
    from normlab.layers import convert_sync_batchnorm

    def build():
        model = nn.Sequential(nn.Conv2d(3, 4, 3), act_cls(4), nn.Conv2d(4, 4, 1), BatchNorm2d(4))
        return _train_a_bit(model, (4, 3, 6, 6))

    model = build()
    x = torch.randn(2, 3, 6, 6) * 3 + 2
    # fold: the fused BN + ReLU stays (with a warning saying why); the plain BN is folded.
    with pytest.warns(UserWarning, match="overrides forward"):
        folded = fold_batchnorm(model)
    assert isinstance(folded[1], act_cls) and isinstance(folded[3], nn.Identity)
    _assert_same_eval_outputs(model, folded, x)
    # convert_norm: refused as a whole, nothing replaced.
    refusal = f"cannot replace 1 \\({act_cls.__name__}\\): .* activation"
    with pytest.raises(TypeError, match=refusal):
        convert_norm(model, to="group", num_groups=2)
    assert isinstance(model[1], act_cls) and isinstance(model[3], BatchNorm2d)
    with pytest.raises(TypeError, match="the model itself"):
        convert_norm(act_cls(4), to="layer")
    # convert_sync_batchnorm: refused, naming the layer.
    with pytest.raises(TypeError, match=f"cannot convert 1 \\({act_cls.__name__}\\)"):
        convert_sync_batchnorm(build())


def test_fold_and_freeze_a_bn_without_bias():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), BatchNorm2d(4, bias=False))
    model = _train_a_bit(model, (4, 3, 5, 5))
    _assert_same_eval_outputs(model, fold_batchnorm(model), torch.randn(2, 3, 5, 5))
    freeze_bn(model, freeze_affine=True)
    assert not model[1].weight.requires_grad
    unfreeze_bn(model)
    assert model[1].weight.requires_grad
