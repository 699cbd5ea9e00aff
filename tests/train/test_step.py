"""The step the loop calls: eager and graphed steps take the same call and give the same
batches' updates (the graphed path's numbers against the eager ones are in test_graphed.py)."""

import contextlib

import torch
from tests.train.test_graphed import fake_capture

import normlab.train.graphed as graphed_module
from normlab.data import BatchLoader
from normlab.train.parallel import ProcessContext
from normlab.train.step import EagerStep, LoaderGraphedStep


def _loader(batch_size=4):
    x = torch.arange(24, dtype=torch.float32).view(12, 2)  # 12 samples of 2 features
    return BatchLoader(x, torch.arange(12) % 3, batch_size, shuffle=True, drop_last=True, seed=0)


def _recorder(seen):
    def update(x, y, grad_norms=None):
        seen.append((x.clone(), y.clone(), grad_norms))
        return x.sum()

    return update


def test_eager_step_trains_this_process_on_its_shard_of_each_global_batch():
    seen, loader = [], _loader()
    step = EagerStep(_recorder(seen), loader, ProcessContext(rank=1, world_size=2))
    batches = list(step.batches())
    norms = {}
    for batch in batches:
        step(batch, norms)
    assert len(seen) == len(batches) == 3
    for (x, y), (sx, sy, g) in zip(batches, seen):
        assert torch.equal(sx, x[2:]) and torch.equal(sy, y[2:]) and g is norms  # rank 1: 2nd half


def test_graphed_step_builds_the_eager_steps_batches_from_indices(monkeypatch):
    monkeypatch.setattr(graphed_module, "side_stream", contextlib.nullcontext)
    monkeypatch.setattr(graphed_module, "capture_cuda_graph", fake_capture)
    eager_seen, graphed_seen = [], []
    eager = EagerStep(_recorder(eager_seen), _loader(batch_size=2), ProcessContext())
    losses = [eager(batch).item() for batch in eager.batches()]
    step = LoaderGraphedStep(_recorder(graphed_seen), _loader(batch_size=2))
    graphed_losses = [step(batch).item() for batch in step.batches()]
    assert step.graphed.captured  # 3 eager warm-up steps, then replays of the captured step
    assert len(graphed_seen) == len(eager_seen) == 6 and graphed_losses == losses
    for (x, y, _), (ex, ey, _) in zip(graphed_seen, eager_seen):
        assert torch.equal(x, ex) and torch.equal(y, ey)
