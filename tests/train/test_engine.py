import math

import pytest
import torch

from normlab.data import load_dataset
from normlab.train import RunConfig, fit
from normlab.train import metrics as M

TIMING = {M.STEP_MS, M.EPOCH_SECONDS}


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", shape=(1, 16), num_classes=4, train_size=320, test_size=64)


def _config(**kw):
    base = dict(dataset="synthetic", hidden=[16, 16], batch_size=32, epochs=3, lr=1e-2)
    return RunConfig(**{**base, **kw})


def _run(config, data, **kw):
    rows = []
    result = fit(config, dataset=data, on_metrics=lambda s, e, v: rows.append((s, e, dict(v))), **kw)
    return result, rows


def _untimed(rows):
    return [(s, e, {k: v for k, v in values.items() if k not in TIMING}) for s, e, values in rows]


def test_trains_and_emits_the_documented_metrics(data):
    result, rows = _run(_config(), data)
    assert result.status == "finished" and result.steps == 27  # 288 train samples / 32 x 3
    names = set().union(*(v for _, _, v in rows))
    assert names == {
        M.GLOBAL_BATCH_SIZE,
        M.BN_BATCH_SIZE,
        M.NUM_PARAMS,
        M.STEPS_PER_EPOCH,
        M.TRAIN_LOSS,
        M.LR,
        M.STEP_MS,
        M.EPOCH_TRAIN_LOSS,
        M.EPOCH_SECONDS,
        M.TEST_LOSS,
        M.TEST_ACC,
        M.HOLDOUT_ACC_TRAIN_MODE,
        M.HOLDOUT_ACC_EVAL_MODE,
        M.TRAIN_EVAL_GAP,
    }
    assert rows[0] == (
        0,
        0,
        {
            M.GLOBAL_BATCH_SIZE: 32.0,
            M.BN_BATCH_SIZE: 32.0,
            M.NUM_PARAMS: float(16 * 16 + 16 * 16 + 16 * 4 + 16 + 16 + 4 + 4 * 16),
            M.STEPS_PER_EPOCH: 9.0,
        },
    )
    loss_steps = [s for s, _, v in rows if M.TRAIN_LOSS in v]
    assert loss_steps == [9, 10, 18, 20, 27]  # every TRAIN_LOG_EVERY steps and at epoch ends
    assert result.final[M.TEST_ACC] > 0.5  # 4 classes: chance is 0.25
    assert 0.0 <= result.final[M.HOLDOUT_ACC_TRAIN_MODE] <= 1.0
    gap = result.final[M.HOLDOUT_ACC_TRAIN_MODE] - result.final[M.HOLDOUT_ACC_EVAL_MODE]
    assert result.final[M.TRAIN_EVAL_GAP] == pytest.approx(gap)


def test_without_norm_train_and_eval_mode_agree(data):
    result, _ = _run(_config(norm="none", epochs=1), data)
    assert result.final[M.TRAIN_EVAL_GAP] == 0.0


def test_same_config_and_seed_give_identical_metrics(data):
    _, first = _run(_config(), data)
    _, second = _run(_config(), data)
    _, other_seed = _run(_config(seed=1), data)
    assert _untimed(first) == _untimed(second)
    assert _untimed(first) != _untimed(other_seed)


def test_resume_from_checkpoint_gives_the_uninterrupted_metrics(data, tmp_path):
    config = _config(
        probes={"grad_norms": True, "every_steps": 4},
        schedule={"name": "cosine"},
        optimizer="sgd",
        optim={"momentum": 0.9},
    )
    _, whole = _run(config, data)
    path = tmp_path / "run.pt"
    stopped, head = _run(config, data, checkpoint_path=path, stop=lambda: True)
    assert stopped.status == "stopped" and stopped.steps == 9 and path.exists()
    resumed, tail = _run(config, data, checkpoint_path=path)
    assert resumed.status == "finished" and resumed.steps == 27
    assert _untimed(head + tail) == _untimed(whole)
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temporary file
    # a finished run's checkpoint: nothing is trained or emitted again
    again, rows = _run(config, data, checkpoint_path=path)
    assert rows == [] and again.status == "finished" and again.steps == 27
    assert again.final[M.TEST_ACC] == resumed.final[M.TEST_ACC]


@pytest.mark.parametrize("norm", ["batch", "batch_renorm"])
def test_evaluating_between_epochs_leaves_training_untouched(data, norm):
    # the held-out pass in train mode must restore the running statistics: the last epoch's
    # numbers are the same whether or not the earlier epochs were evaluated
    every, _ = _run(_config(norm=norm, eval_every_epochs=1), data)
    last_only, _ = _run(_config(norm=norm, eval_every_epochs=3), data)
    for name in (M.TRAIN_LOSS, M.TEST_LOSS, M.HOLDOUT_ACC_TRAIN_MODE, M.HOLDOUT_ACC_EVAL_MODE):
        assert every.final[name] == last_only.final[name], name


def test_checkpoint_of_another_config_is_refused(data, tmp_path):
    path = tmp_path / "run.pt"
    _run(_config(epochs=1), data, checkpoint_path=path)
    with pytest.raises(ValueError, match="belongs to run"):
        _run(_config(epochs=1, seed=5), data, checkpoint_path=path)


def test_divergence_ends_the_run_and_keeps_measurements(data):
    config = _config(optimizer="sgd", lr=1e6, init_scale=10.0, norm="none", epochs=3)
    result, rows = _run(config, data)
    assert result.status == "diverged"
    assert result.final[M.DIVERGED] == 1.0 and not math.isfinite(result.final[M.TRAIN_LOSS])
    assert result.steps < 27 and M.GLOBAL_BATCH_SIZE in result.final
    assert rows[-1][2].keys() == {M.EPOCH_SECONDS, M.EPOCH_TRAIN_LOSS}


def test_max_steps_schedule_and_label_smoothing(data):
    config = _config(
        max_steps=12,
        schedule={"name": "warmup_linear", "warmup_steps": 5},
        optim={"label_smoothing": 0.1, "grad_clip": 0.5},
        eval_every_epochs=5,
    )
    result, rows = _run(config, data)
    assert result.steps == 12
    lrs = {s: v[M.LR] for s, _, v in rows if M.LR in v}
    # lr emitted is the one used by the window's last step (0-based step s - 1)
    assert lrs[9] == pytest.approx(1e-2 * (1 - (8 - 5) / 7))
    evals = [e for _, e, v in rows if M.TEST_ACC in v]
    assert evals == [2]  # eval_every 5 > epochs: only the last (partial) epoch is evaluated


def test_probes_follow_every_steps(data):
    config = _config(
        epochs=1, probes={"activations": True, "weight_norms": True, "step_time": False, "every_steps": 3, "units": 2}
    )
    _, rows = _run(config, data)
    probe_steps = [s for s, _, v in rows if "act/blocks.0.act/mean" in v]
    assert probe_steps == [3, 6, 9]
    keys = next(v for _, _, v in rows if "act/blocks.0.act/mean" in v).keys()
    assert {"act/blocks.1.act/u15/p85", "weight_norm/head.weight"} <= set(keys)
    assert not any(M.STEP_MS in v for _, _, v in rows)


def test_gpu_only_options_and_bad_sizes_are_clear_errors(data):
    with pytest.raises(ValueError, match="precision='bf16'.*set precision='fp32'"):
        fit(_config(precision="bf16"), dataset=data)
    with pytest.raises(ValueError, match="compile=true.*GPU option"):
        fit(_config(compile=True), dataset=data)
    with pytest.raises(
        ValueError,
        match="precision='bf16' .* and compile=true .* are GPU options.*or set precision='fp32', compile=false$",
    ):
        fit(_config(precision="bf16", compile=True), dataset=data)
    with pytest.raises(ValueError, match="nproc=2 but this process group has 1"):
        fit(_config(nproc=2), dataset=data)
    with pytest.raises(ValueError, match="lower batch_size"):
        fit(_config(batch_size=1000), dataset=data)
    with pytest.raises(ValueError, match="^device: expected cpu, cuda, cuda:N or auto, got 'tpu'$"):
        fit(_config(device="tpu"), dataset=data)


@pytest.mark.parametrize("model", ["cnn", "resnet20"])
def test_conv_models_run_through_fit(data, model):
    result, _ = _run(_config(model=model, hidden=None, epochs=1, max_steps=2, norm="group"), data)
    assert result.status == "finished" and result.steps == 2


def test_fit_refuses_an_optimizer_that_is_not_the_models(data, monkeypatch):
    import normlab.train.build as build
    from normlab.train import ForeignOptimizerError

    stranger = torch.nn.Linear(2, 2)
    monkeypatch.setattr(
        build, "build_optimizer", lambda model, config, groups=None: torch.optim.Adam(stranger.parameters())
    )
    with pytest.raises(ForeignOptimizerError):
        fit(_config(epochs=1), dataset=data)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_and_compile_on_gpu(data):
    result, _ = _run(_config(device="cuda", precision="bf16", compile=True, epochs=2), data)
    assert result.status == "finished" and result.final[M.TEST_ACC] > 0.5


def test_dataset_must_match_the_config(data):
    with pytest.raises(ValueError, match="dataset passed to fit is 'synthetic' but config.dataset is 'mnist1d'"):
        fit(_config(dataset="mnist1d"), dataset=data)


def test_holdout_smaller_than_a_batch_is_one_batch(data):
    result, _ = _run(_config(epochs=1, holdout_fraction=0.05), data)  # 16 held out, batch 32
    assert 0.0 <= result.final[M.HOLDOUT_ACC_TRAIN_MODE] <= 1.0
    assert result.final[M.HOLDOUT_ACC_TRAIN_MODE] * 16 == round(result.final[M.HOLDOUT_ACC_TRAIN_MODE] * 16)
    no_holdout, _ = _run(_config(epochs=1, holdout_fraction=0.0), data)
    assert M.TRAIN_EVAL_GAP not in no_holdout.final and no_holdout.steps == 10


def _stop_on_rank_0_only() -> bool:
    return torch.distributed.get_rank() == 0


def test_a_stop_seen_by_one_process_stops_every_process():
    # A stop Event is read by each process at its own time, so one may see it set and another
    # not; the process going on then waited forever in a collective for the stopped one.
    import datetime

    from normlab.train import launch

    config = _config(batch_size=16, hidden=[8], epochs=3, nproc=2, checkpoint_every_epochs=0, holdout_fraction=0.0)
    data = load_dataset("synthetic", shape=(1, 12), num_classes=3, train_size=64, test_size=16)
    result = launch(config, dataset=data, stop=_stop_on_rank_0_only, timeout=datetime.timedelta(seconds=60))
    assert result.status == "stopped" and result.steps == 4  # after epoch 1 of 3


def test_epoch_train_loss_is_the_step_weighted_mean_of_its_windows(data):
    _, rows = _run(_config(epochs=3), data)
    last_step, by_epoch = 0, {}
    for step, epoch, values in rows:
        if M.TRAIN_LOSS in values:  # windows end every 10 steps and at each epoch's end
            by_epoch.setdefault(epoch, []).append((step - last_step, values[M.TRAIN_LOSS]))
            last_step = step
    epoch_loss = {e: v[M.EPOCH_TRAIN_LOSS] for _, e, v in rows if M.EPOCH_TRAIN_LOSS in v}
    assert sorted(by_epoch) == sorted(epoch_loss) == [1, 2, 3]
    assert [len(w) for w in by_epoch.values()] == [1, 2, 2]  # steps 9 | 10, 18 | 20, 27
    for e, windows in by_epoch.items():
        steps = sum(n for n, _ in windows)
        assert steps == 9
        assert epoch_loss[e] == pytest.approx(sum(n * loss for n, loss in windows) / steps, rel=1e-6)


def _trained_and_initial(config, data, tmp_path):
    """(parameters after a real fit, parameters at init, the emitted rows)."""
    from normlab.train.build import build
    from normlab.train.checkpoint import load_checkpoint
    from normlab.train.parallel import ProcessContext

    initial = {n: p.detach().clone() for n, p in build(config, data, ProcessContext()).model.named_parameters()}
    path = tmp_path / "run.pt"
    result, rows = _run(config, data, checkpoint_path=path)
    assert result.status == "finished"
    trained = load_checkpoint(path, config.run_id)["model"]
    return {n: trained[n] for n in initial}, initial, rows


def test_bn_only_trains_the_batch_norms_and_nothing_else(data, tmp_path):
    from normlab.train.bn_only import bn_parameter_names

    # SGD with momentum and weight decay: neither may move a frozen weight
    config = _config(trainable="bn_only", optimizer="sgd", optim={"momentum": 0.9, "weight_decay": 1e-2})
    trained, initial, rows = _trained_and_initial(config, data, tmp_path)
    bn = set(bn_parameter_names(_model_of(config, data)))
    assert bn and bn < set(initial)
    for name in initial:
        if name in bn:
            assert not torch.equal(trained[name], initial[name]), name
        else:
            assert torch.equal(trained[name], initial[name]), name  # bit-identical to init
    assert rows[0][2][M.NUM_PARAMS] == sum(initial[n].numel() for n in bn)


def test_random_matched_trains_as_many_random_scalars_as_bn_has(data, tmp_path):
    from normlab.train.bn_only import bn_only, trainable_subset

    config = _config(trainable="random_matched", optimizer="adamw", optim={"weight_decay": 1e-2})
    trained, initial, rows = _trained_and_initial(config, data, tmp_path)
    model = _model_of(config, data)
    matched = bn_only(model).count
    masks = trainable_subset(model, "random_matched", config.seed).masks
    moved = 0
    for name, before in initial.items():
        changed = trained[name] != before
        mask = masks[name] if masks.get(name) is not None else torch.full_like(changed, name in masks)
        assert torch.equal(changed, mask), name  # exactly the drawn scalars moved
        moved += int(changed.sum())
    assert moved == matched == rows[0][2][M.NUM_PARAMS]
    other_seed = trainable_subset(model, "random_matched", config.seed + 1).masks
    assert any(not torch.equal(m, other_seed.get(n, m)) for n, m in masks.items() if m is not None)


def _model_of(config, data):
    from normlab.train.build import build
    from normlab.train.parallel import ProcessContext

    return build(config.model_copy(update={"trainable": "all"}), data, ProcessContext()).model


def test_bn_only_without_batch_norm_is_a_clear_error(data):
    with pytest.raises(ValueError, match="bn_only found no batch norm layer"):
        fit(_config(trainable="bn_only", norm="layer"), dataset=data)
