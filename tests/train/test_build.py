"""Building a run: the held-out split, the norms' arguments, the trainable subset and its
optimizer groups, the device."""

import pytest
import torch

from normlab.data import load_dataset
from normlab.train import RunConfig
from normlab.train.build import build, model_norm_kwargs, run_device, split_holdout
from normlab.train.parallel import ProcessContext


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", shape=(1, 16), num_classes=4, train_size=320, test_size=64)


def _config(**kw):
    base = dict(dataset="synthetic", hidden=[16, 16], batch_size=32, epochs=3, lr=1e-2)
    return RunConfig(**{**base, **kw})


def test_holdout_is_fixed_and_disjoint():
    train, hold = split_holdout(100, 0.1)
    assert len(hold) == 10 and len(train) == 90
    assert set(train.tolist()).isdisjoint(hold.tolist())
    assert torch.equal(split_holdout(100, 0.1)[1], hold)
    assert not torch.equal(hold, hold.sort().values)  # random order: i.i.d. fixed batches
    assert len(split_holdout(5, 0.01)[1]) == 1 and len(split_holdout(5, 0.0)[1]) == 0


def test_bn_impl_reaches_batch_norms_only():
    assert model_norm_kwargs(_config(bn_impl="reference")) == {"impl": "reference"}
    assert model_norm_kwargs(_config(bn_impl="reference", norm="group")) == {}
    assert model_norm_kwargs(_config()) == {}


def test_an_unbuilt_subset_trains_everything_in_the_usual_groups(data):
    run = build(_config(optim={"weight_decay": 1e-2}), data, ProcessContext())
    assert all(p.requires_grad for p in run.model.parameters())
    decays = sorted((g["weight_decay"], len(g["params"])) for g in run.optimizer.param_groups)
    assert decays == [(0.0, 7), (1e-2, 3)]  # gamma/beta/biases, then Linear weights
    assert run.num_trainable == sum(p.numel() for p in run.model.parameters())


def test_bn_only_freezes_every_other_tensor_and_keeps_the_decay_rule(data):
    run = build(_config(trainable="bn_only", optim={"weight_decay": 1e-2}), data, ProcessContext())
    trained = {n for n, p in run.model.named_parameters() if p.requires_grad}
    assert trained == {f"blocks.{i}.norm.{w}" for i in (0, 1) for w in ("weight", "bias")}
    # gamma and beta are not decayed (decay_norm_and_bias=false), as in a run training all
    assert [(g["weight_decay"], len(g["params"])) for g in run.optimizer.param_groups] == [(0.0, 4)]
    assert run.num_trainable == 64


def test_random_matched_puts_partly_trained_tensors_in_a_group_without_decay(data):
    run = build(_config(trainable="random_matched", optim={"weight_decay": 1e-2}), data, ProcessContext())
    assert run.num_trainable == 64
    for group in run.optimizer.param_groups:
        if group["weight_decay"] != 0.0:  # only tensors trained whole may decay
            assert all(p.ndim > 1 for p in group["params"])
    bn = [p for n, p in run.model.named_parameters() if ".norm." in n]
    assert not any(p.requires_grad for p in bn)


def test_run_device_names_the_setting():
    assert run_device("cpu", ProcessContext()) == torch.device("cpu")
    with pytest.raises(ValueError, match="^device: expected cpu, cuda, cuda:N or auto, got 'tpu'$"):
        run_device("tpu", ProcessContext())
