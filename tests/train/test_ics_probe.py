"""The mechanism probe (ICS and the landscape on copies): its numbers against a hand computation
and against train.ics / train.landscape on the same state; the run it measures untouched; the
engine's training bit-identical with it on or off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from normlab.data import BatchLoader, load_dataset
from normlab.layers.noisy import NoisyBatchNorm
from normlab.models import build_model
from normlab.train import RunConfig, fit
from normlab.train import metrics as M
from normlab.train.build import build_model_for, split_holdout
from normlab.train.checkpoint import load_checkpoint
from normlab.train.ics import internal_covariate_shift, optimizer_deltas
from normlab.train.ics_probe import first_batches, measure_shift
from normlab.train.landscape import landscape_probe
from normlab.train.parallel import ProcessContext

TIMING = {M.STEP_MS, M.EPOCH_SECONDS}


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _hand_ics(x, labels, w1, w2, lr):
    """Layer 2 of f = W2 W1 x with mean cross-entropy: ||G2 - G2'|| and cos(G2, G2'), G2' after
    W1's SGD step. dL/dz = (softmax(z) - Y) / N for z = h W2^T, h = x W1^T."""
    n, y = len(x), np.eye(w2.shape[0])[labels]

    def grads(w1_):
        h = x @ w1_.T  # (N, d1)
        dz = (_softmax(h @ w2.T) - y) / n  # (N, d2)
        return (dz @ w2).T @ x, dz.T @ h  # G1 (d1, d0), G2 (d2, d1)

    g1, g2 = grads(w1)
    _, g2_after = grads(w1 - lr * g1)
    cos = (g2 * g2_after).sum() / (np.linalg.norm(g2) * np.linalg.norm(g2_after))
    return np.linalg.norm(g2 - g2_after), cos


def test_two_layer_linear_toy_matches_the_hand_computation():
    rng = np.random.default_rng(1)
    w1, w2, lr = rng.normal(size=(4, 5)), rng.normal(size=(3, 4)), 0.5
    model = nn.Sequential(nn.Linear(5, 4, bias=False), nn.Linear(4, 3, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(w1))
        model[1].weight.copy_(torch.from_numpy(w2))
    batches = [(rng.normal(size=(8, 5)), rng.integers(0, 3, size=8)) for _ in range(2)]
    values = measure_shift(
        model,
        torch.optim.SGD(model.parameters(), lr=lr),
        [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches],
    )
    hand = [_hand_ics(x, y, w1, w2, lr) for x, y in batches]
    assert values[M.ics_key(2, "l2")] == pytest.approx(np.mean([h[0] for h in hand]), rel=1e-9)
    assert values[M.ics_key(2, "cos")] == pytest.approx(np.mean([h[1] for h in hand]), rel=1e-9)
    assert min(h[0] for h in hand) > 1e-3  # the toy really shifts
    assert set(values) == {M.ics_key(2, "l2"), M.ics_key(2, "cos"), *M.LANDSCAPE_KEYS}


def _trained_mlp(norm):
    """A small MLP after two Adam steps (so Adam has moments), and a fixed batch."""
    torch.manual_seed(0)
    model = build_model("mlp", (1, 12), 4, norm=norm, hidden=[16, 8])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 12, generator=g), torch.randint(0, 4, (32,), generator=g)
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt, (x, y)


def test_the_probe_is_ics_and_landscape_measured_on_the_same_state():
    model, opt, (x, y) = _trained_mlp("batch")
    values = measure_shift(model, opt, [(x, y)])

    def loss_fn(m):
        return nn.functional.cross_entropy(m(x), y)

    layers = internal_covariate_shift(model, loss_fn, deltas=optimizer_deltas(model, opt, loss_fn))
    land = landscape_probe(model, loss_fn, M.LANDSCAPE_STEP_SIZES)
    assert values == {
        M.ics_key(2, "l2"): layers[1].l2,
        M.ics_key(2, "cos"): layers[1].cosine,
        M.ics_key(3, "l2"): layers[2].l2,
        M.ics_key(3, "cos"): layers[2].cosine,
        M.LANDSCAPE_LOSS_RANGE: land.loss_range,
        M.LANDSCAPE_GRAD_CHANGE: land.max_grad_change,
        M.LANDSCAPE_BETA: land.beta_smoothness,
    }


def test_the_measured_run_is_left_alone():
    model, opt, (x, y) = _trained_mlp("noisy_batch")
    noisy = [m for m in model.modules() if isinstance(m, NoisyBatchNorm)]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    moments = [(p, {k: v.clone() for k, v in opt.state[p].items()}) for p in model.parameters()]
    gens = [m.generator.get_state() for m in noisy]
    noise = [m.last_noise for m in noisy]
    rng = torch.get_rng_state()
    first = measure_shift(model, opt, [(x, y)])
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    for p, saved in moments:  # Adam's moments and step count, bit for bit
        assert all(torch.equal(opt.state[p][k], v) for k, v in saved.items())
    assert all(torch.equal(m.generator.get_state(), s) for m, s in zip(noisy, gens))
    assert [m.last_noise for m in noisy] == noise  # the same tensors, not redrawn
    assert torch.equal(torch.get_rng_state(), rng)
    assert measure_shift(model, opt, [(x, y)]) == first  # the copy draws its noise from the seed
    with pytest.raises(ValueError, match="at least one training batch"):
        measure_shift(model, opt, [])


def test_first_batches_are_epoch_1s_and_the_loader_does_not_move():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 3, generator=g), torch.randint(0, 2, (40,), generator=g)
    loader = BatchLoader(x, y, 8, seed=3)
    epoch1 = list(BatchLoader(x, y, 8, seed=3))
    it = iter(loader)
    next(it), next(it), next(it)  # mid-epoch
    got = first_batches(loader, 2)
    assert len(got) == 2 and all(torch.equal(a[0], b[0]) for a, b in zip(got, epoch1))
    assert torch.equal(next(iter(loader))[0], epoch1[3][0])  # it goes on where it stood
    assert len(first_batches(loader, 99)) == len(loader)


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", shape=(1, 16), num_classes=4, train_size=320, test_size=64)


def _fit(data, path, **kw):
    config = RunConfig(**{**dict(dataset="synthetic", hidden=[16, 16], batch_size=32, epochs=3, lr=1e-2), **kw})
    rows = []
    fit(config, dataset=data, on_metrics=lambda s, e, v: rows.append((s, e, dict(v))), checkpoint_path=path)
    return config, rows, load_checkpoint(path, config.run_id)


def _training_rows(rows):
    """The rows of the training itself: the probe's emissions and wall times left out."""
    kept = [
        (s, e, {k: v for k, v in values.items() if k not in TIMING and not k.startswith(("ics/", "landscape/"))})
        for s, e, values in rows
    ]
    return [row for row in kept if row[2]]


@pytest.mark.parametrize("norm", ["batch", "noisy_batch"])
def test_training_is_bit_identical_with_the_probe_on_and_off(data, tmp_path, norm):
    _, off, off_state = _fit(data, tmp_path / "off.pt", norm=norm)
    config, on, on_state = _fit(data, tmp_path / "on.pt", norm=norm, probes={"ics_every_epochs": 2})
    assert _training_rows(on) == _training_rows(off)
    for part in ("model", "optimizer", "rng"):
        assert str(on_state[part]) == str(off_state[part]), part
    for key, value in off_state["model"].items():
        assert torch.equal(on_state["model"][key], value), key
    # the probe's points: step 0, every 2 epochs, the last epoch (9 steps per epoch)
    points = sorted({s for s, _, v in on if M.ics_key(2, "cos") in v})
    assert points == [0, 18, 27]
    # at the end it measured what a probe of the checkpoint measures, on epoch 1's first batches
    model, opt, _ = build_model_for(config, data, ProcessContext(), torch.device("cpu"))
    model.load_state_dict(on_state["model"])
    opt.load_state_dict(on_state["optimizer"])
    train_idx, _ = split_holdout(len(data.train_y), config.holdout_fraction)
    loader = BatchLoader(
        data.train_x[train_idx], data.train_y[train_idx], 32, seed=config.seed, mean=data.mean, std=data.std
    )
    end = {k: v for s, _, values in on if s == 27 for k, v in values.items() if k.startswith(("ics/", "landscape/"))}
    assert end == measure_shift(model, opt, first_batches(loader))
