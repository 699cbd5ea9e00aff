"""fit commits its metrics before each checkpoint: a checkpoint never claims a step whose
values are not stored (the engine side of exactly-once metrics)."""

import pytest

from normlab.data import load_dataset
from normlab.train import RunConfig, engine, fit
from normlab.train.checkpoint import read_header


class CommittingSink:
    """An on_metrics with commit(): `stored` holds what a commit made durable."""

    def __init__(self):
        self.emitted, self.stored, self.commits = [], [], 0

    def __call__(self, step, epoch, values):
        self.emitted.extend((step, name) for name in values)

    def commit(self):
        self.commits += 1
        self.stored = list(self.emitted)


@pytest.mark.parametrize("checkpoint_every_epochs", [1, 2])
def test_every_checkpoint_comes_after_a_commit_of_every_emitted_row(tmp_path, monkeypatch, checkpoint_every_epochs):
    data = load_dataset("synthetic", shape=(1, 16), num_classes=4, train_size=320, test_size=64)
    config = RunConfig(
        dataset="synthetic", hidden=[16], batch_size=32, epochs=3, checkpoint_every_epochs=checkpoint_every_epochs
    )
    sink = CommittingSink()
    saved = []
    real_save = engine.save_checkpoint

    def checked_save(path, state):
        assert sink.stored == sink.emitted  # nothing emitted is left uncommitted
        assert max(step for step, _ in sink.stored) == state["step"]
        saved.append(state["step"])
        real_save(path, state)

    monkeypatch.setattr(engine, "save_checkpoint", checked_save)
    path = tmp_path / "checkpoint.pt"
    result = fit(config, dataset=data, on_metrics=sink, checkpoint_path=path)
    assert result.status == "finished" and sink.commits == len(saved) >= 2
    assert read_header(path)["step"] == result.steps == saved[-1]
