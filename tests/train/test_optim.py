import math

import pytest
import torch
from torch import nn

from normlab.models import build_model
from normlab.train import ForeignOptimizerError, RunConfig, build_optimizer, check_optimizer_owns_model, param_groups


def _mlp(norm="batch"):
    return build_model("mlp", (1, 8), 3, hidden=[6, 5], norm=norm)


def test_own_optimizer_passes():
    model = _mlp()
    check_optimizer_owns_model(model, build_optimizer(model, RunConfig()))


def test_the_seed_bug_fails_loudly():
    # the seed notebook stepped its BN model with the plain model's optimizer
    with_bn, without_bn = _mlp("batch"), _mlp("none")
    foreign = torch.optim.Adam(without_bn.parameters(), lr=1e-3)
    with pytest.raises(ForeignOptimizerError, match=r"exactly the model's 10 trainable.*misses 10"):
        check_optimizer_owns_model(with_bn, foreign)


def test_partial_extra_and_duplicate_params_fail():
    model = _mlp()
    params = list(model.parameters())
    with pytest.raises(ForeignOptimizerError, match="misses 1"):
        check_optimizer_owns_model(model, torch.optim.SGD(params[:-1], lr=0.1))
    with pytest.raises(ForeignOptimizerError, match="holds 1 tensors"):
        check_optimizer_owns_model(model, torch.optim.SGD(params + [nn.Parameter(torch.zeros(2))], lr=0.1))
    opt = torch.optim.SGD(params, lr=0.1)
    opt.param_groups[0]["params"].append(params[0])  # torch refuses duplicates at build time
    with pytest.raises(ForeignOptimizerError, match="1 duplicates"):
        check_optimizer_owns_model(model, opt)


def test_frozen_parameters_must_not_be_held():
    model = _mlp()
    model.head.bias.requires_grad_(False)
    with pytest.raises(ForeignOptimizerError, match="holds 1"):
        check_optimizer_owns_model(model, torch.optim.SGD(model.parameters(), lr=0.1))
    check_optimizer_owns_model(model, build_optimizer(model, RunConfig()))


def test_weight_decay_excludes_norm_and_biases():
    model = _mlp()
    groups = param_groups(model, 0.1, decay_norm_and_bias=False)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    assert decayed == {"blocks.0.linear.weight", "blocks.1.linear.weight", "head.weight"}
    assert groups[1]["weight_decay"] == 0.0 and len(groups[1]["params"]) == 7
    assert len(param_groups(model, 0.1, decay_norm_and_bias=True)) == 1


@pytest.mark.parametrize(
    "name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]
)
def test_optimizer_types_and_hyperparameters(name, cls):
    config = RunConfig(optimizer=name, lr=0.05, optim={"weight_decay": 0.01, "momentum": 0.8, "nesterov": True})
    opt = build_optimizer(_mlp(), config)
    assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.05
    assert opt.param_groups[0]["weight_decay"] == 0.01
    if name == "sgd":
        assert opt.param_groups[0]["momentum"] == 0.8 and opt.param_groups[0]["nesterov"]


def test_nesterov_without_momentum_is_a_clear_error():
    with pytest.raises(ValueError, match="nesterov=true needs optim.momentum > 0"):
        build_optimizer(_mlp(), RunConfig(optimizer="sgd", optim={"momentum": 0.0, "nesterov": True}))


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_cuda_graph_optimizer_holds_lr_tensors_the_scheduler_fills(name):
    from normlab.train.optim import lr_tensors_to
    from normlab.train.schedule import build_scheduler

    config = RunConfig(
        optimizer=name, lr=0.05, cuda_graph=True, optim={"weight_decay": 0.01}, schedule={"name": "cosine"}
    )
    opt = build_optimizer(_mlp(), config)
    lrs = [group["lr"] for group in opt.param_groups]
    assert len(lrs) == 2 and lrs[0] is not lrs[1]  # one tensor per group, not one shared
    assert all(isinstance(lr, torch.Tensor) and lr.dtype == torch.float32 and lr.ndim == 0 for lr in lrs)
    assert all(group.get("capturable", name == "sgd") for group in opt.param_groups)
    scheduler = build_scheduler(opt, config.schedule, total_steps=10, steps_per_epoch=5)
    opt.step()  # (no gradients: changes nothing; keeps the scheduler's call order)
    scheduler.step()
    # filled in place: a captured graph keeps reading the same tensor
    assert opt.param_groups[0]["lr"] is lrs[0]
    assert float(lrs[0]) == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    lr_tensors_to(opt, torch.device("cpu"))  # already there: the same tensors stay
    assert all(group["lr"] is lr for group, lr in zip(opt.param_groups, lrs))
    lr_tensors_to(opt, torch.device("meta"))  # (a checkpoint's CPU lr going to the GPU)
    assert all(group["lr"].device.type == "meta" for group in opt.param_groups)
    plain = build_optimizer(_mlp(), RunConfig(optimizer=name))
    lr_tensors_to(plain, torch.device("meta"))
    assert plain.param_groups[0]["lr"] == 1e-3  # float learning rates are left alone
