"""RunConfig: defaults are the seed's setting, validation names the field, the id is stable."""

import pytest
from pydantic import ValidationError

from normlab.data import INPUT_NORMS
from normlab.train.config import RunConfig


def test_defaults_are_the_seed_setting():
    config = RunConfig()
    assert (config.model, config.optimizer, config.lr, config.batch_size) == ("mlp", "adam", 1e-3, 64)
    assert config.dataset == "mnist1d"


def test_run_id_is_stable_and_depends_on_every_value():
    assert RunConfig().run_id == RunConfig().run_id
    assert len(RunConfig().run_id) == 16
    ids = {
        RunConfig().run_id,
        RunConfig(seed=1).run_id,
        RunConfig(norm="none").run_id,
        RunConfig(optim={"weight_decay": 1e-4}).run_id,
    }
    assert len(ids) == 4


def test_resolved_round_trips():
    config = RunConfig(norm="group", norm_kwargs={"num_groups": 4}, schedule={"name": "cosine"})
    assert RunConfig(**config.resolved()) == config
    assert RunConfig(**config.resolved()).run_id == config.run_id


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"optimizer": "lion"}, "optimizer"),
        ({"bogus": 1}, "bogus"),
        ({"optim": {"momentum": 1.5}}, "momentum"),
        ({"hidden": [100, 0]}, "hidden"),
    ],
)
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ValidationError, match=field):
        RunConfig(**kwargs)


def test_sync_bn_needs_several_processes():
    with pytest.raises(ValidationError, match="nproc"):
        RunConfig(sync_bn=True)
    assert RunConfig(sync_bn=True, nproc=2).sync_bn


def test_warmup_with_a_schedule_that_ignores_it_is_refused():
    with pytest.raises(ValidationError, match="warmup_steps=10 has no effect"):
        RunConfig(schedule={"name": "constant", "warmup_steps": 10})
    assert RunConfig(schedule={"name": "cosine", "warmup_steps": 10}).schedule.warmup_steps == 10


@pytest.mark.parametrize(
    "kwargs, clash",
    [
        ({"nproc": 2}, "nproc=2"),
        ({"probes": {"activations": True}}, "probes.activations/grad_norms"),
        ({"probes": {"grad_norms": True}}, "probes.activations/grad_norms"),
    ],
)
def test_cuda_graph_refuses_what_a_replayed_step_cannot_do(kwargs, clash):
    with pytest.raises(ValidationError, match=f"cuda_graph=true cannot be combined with {clash}.*set cuda_graph=false"):
        RunConfig(cuda_graph=True, **kwargs)
    RunConfig(**kwargs)  # each is fine without cuda_graph
    RunConfig(cuda_graph=True, probes={"weight_norms": True})  # read after the step: fine
    RunConfig(cuda_graph=True, compile=True)  # Inductor's kernels are captured like any others


def test_trainable_all_keeps_the_run_ids_stored_before_the_field_existed():
    # ids computed before RunConfig had `trainable`: stored runs must keep them
    assert RunConfig().run_id == "6dadc7f59ae8c2d4"
    assert RunConfig(seed=1, norm="none", batch_size=128, optim={"weight_decay": 1e-4}).run_id == "3185a808c0b04d52"
    assert RunConfig(trainable="all").run_id == RunConfig().run_id
    assert len({RunConfig(trainable=t).run_id for t in ("all", "bn_only", "random_matched")}) == 3
    subset = RunConfig(trainable="bn_only")
    assert subset.resolved()["trainable"] == "bn_only"
    assert RunConfig(**subset.resolved()).run_id == subset.run_id


def test_input_norm_default_keeps_stored_run_ids_and_matches_the_data_layer():
    assert RunConfig().run_id == "6dadc7f59ae8c2d4"  # computed before RunConfig had `input_norm`
    assert RunConfig(input_norm="train_split").run_id == RunConfig().run_id
    assert RunConfig(input_norm="half").run_id != RunConfig().run_id
    assert set(RunConfig.model_fields["input_norm"].annotation.__args__) == set(INPUT_NORMS)
    with pytest.raises(ValidationError, match="input_norm"):
        RunConfig(input_norm="imagenet")


def test_the_ics_probe_keeps_run_ids_at_its_default_and_refuses_what_it_cannot_measure():
    assert RunConfig(probes={"ics_every_epochs": 0}).run_id == RunConfig().run_id == "6dadc7f59ae8c2d4"
    probed = RunConfig(probes={"ics_every_epochs": 5})
    assert probed.run_id != RunConfig().run_id
    assert RunConfig(**probed.resolved()).run_id == probed.run_id
    with pytest.raises(ValueError, match="cuda_graph=true cannot be combined with probes.ics_every_epochs"):
        RunConfig(cuda_graph=True, probes={"ics_every_epochs": 5})
    with pytest.raises(ValueError, match="set nproc=1 or probes.ics_every_epochs=0"):
        RunConfig(nproc=2, probes={"ics_every_epochs": 5})
