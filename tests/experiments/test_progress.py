"""The progress bar shows the runs in flight with epoch and loss, and done/total."""

from __future__ import annotations

import io

from rich.console import Console

from normlab.experiments.progress import ProgressView


def test_progress_shows_run_epoch_loss_and_count():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    with ProgressView(2, title="exp", console=console) as view:
        view.started("r1", "norm=batch seed=0")
        view.metrics("r1", [(10, 3, "lr", 0.1), (10, 3, "train_loss", 0.4321)])
        description = view._progress.tasks[0].description
        assert description == "norm=batch seed=0 · epoch 3 · loss 0.4321"
        view.ended("r1", "finished")
        view.started("r2", "norm=none seed=0")
        view.ended("r2", "failed")
        assert view._progress.tasks[0].completed == 2
    assert "run r2 failed" in buffer.getvalue()


def test_disabled_progress_is_a_no_op():
    with ProgressView(3, enabled=False) as view:
        view.started("r", "x")
        view.metrics("r", [(1, 1, "train_loss", 1.0)])
        view.ended("r", "finished")
    assert not view.active
