"""Fake run functions with the engine's signature, so runner tests never depend on training.

Each behaves like `normlab.train.fit`: `config.epochs` epochs, metrics per epoch committed
(`on_metrics.commit()`) before a checkpoint (JSON `{"epoch": k}`) rewritten atomically after
every epoch and read back to resume. They
log to the run folder: `starts.log` (one line per start, with the epoch it resumed from),
`completions.log` (one line per completed run) and `pid` (the executing process).
They live in a module (not a test file) so spawned workers and Ray tasks can import them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class FakeResult:
    status: str
    final: dict = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0


def _append(path: Path, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(line + "\n")


def expected_acc(config) -> float:
    """The fake's final accuracy: a function of the config, so tests can check it arrived."""
    return round(0.5 + 0.01 * config.seed + 0.001 * config.batch_size, 6)


def fake_fit(config, *, on_metrics, checkpoint_path, sleep_per_epoch: float = 0.0):
    run_dir = Path(checkpoint_path).parent
    (run_dir / "pid").write_text(str(os.getpid()))
    first = json.loads(Path(checkpoint_path).read_text())["epoch"] + 1 if Path(checkpoint_path).exists() else 1
    _append(run_dir / "starts.log", f"start epoch={first}")
    for epoch in range(first, config.epochs + 1):
        time.sleep(sleep_per_epoch)
        on_metrics(
            epoch * 10, epoch, {"train_loss": 1.0 / epoch, "test_acc": expected_acc(config) * epoch / config.epochs}
        )
        if hasattr(on_metrics, "commit"):  # as the engine does: metrics stored before the checkpoint
            on_metrics.commit()
        tmp = Path(str(checkpoint_path) + ".tmp")
        tmp.write_text(json.dumps({"epoch": epoch}))
        os.replace(tmp, checkpoint_path)
    _append(run_dir / "completions.log", "done")
    return FakeResult("finished", {"test_acc": expected_acc(config)}, config.epochs * 10, 0.01)


def slow_fit(config, *, on_metrics, checkpoint_path):
    """fake_fit taking 0.4 s per epoch: long enough to be killed mid-run."""
    return fake_fit(config, on_metrics=on_metrics, checkpoint_path=checkpoint_path, sleep_per_epoch=0.4)


def flaky_fit(config, *, on_metrics, checkpoint_path):
    """Raises for seed 1 after one epoch of metrics (a crashing run); otherwise fake_fit."""
    if config.seed == 1:
        on_metrics(10, 1, {"train_loss": 2.0})
        raise RuntimeError("planted failure for seed 1")
    return fake_fit(config, on_metrics=on_metrics, checkpoint_path=checkpoint_path)


def diverging_fit(config, *, on_metrics, checkpoint_path):
    on_metrics(10, 1, {"train_loss": float("inf"), "diverged": 1.0})
    return FakeResult("diverged", {"train_loss": float("inf")}, 10, 0.01)


def bad_status_fit(config, *, on_metrics, checkpoint_path):
    return FakeResult("done?", {}, 0, 0.0)


def slow_flaky_fit(config, *, on_metrics, checkpoint_path):
    """seed 1 raises at once; other seeds are slow_fit."""
    if config.seed == 1:
        raise RuntimeError("planted failure for seed 1")
    return slow_fit(config, on_metrics=on_metrics, checkpoint_path=checkpoint_path)


def disk_full_fit(config, *, on_metrics, checkpoint_path):
    """One epoch of metrics, then its checkpoint write fails: the disk is full (ENOSPC), and
    the temporary it started is removed, as `save_checkpoint` does."""
    import errno

    on_metrics(10, 1, {"train_loss": 1.0})
    tmp = Path(str(checkpoint_path) + ".tmp")
    tmp.write_text("partial")
    tmp.unlink()
    raise OSError(errno.ENOSPC, "No space left on device", str(checkpoint_path))
