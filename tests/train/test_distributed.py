"""Data-parallel training: DDP + SyncBatchNorm equals single-process training on the full batch,
and `launch` runs `fit` on 2 gloo processes (relaying rank 0's metrics), under torchrun's
environment, and re-raises a process's error.
"""

from __future__ import annotations

import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from normlab.layers.batchnorm import BatchNorm1d
from normlab.train import RunConfig, fit
from normlab.train.checkpoint import read_header
from normlab.train.distributed import free_port, is_main_process, launch, resolve_backend

TOL = dict(rtol=1e-10, atol=1e-10)


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(),
        nn.Linear(6, 4), BatchNorm1d(4, momentum=None), nn.ReLU(), nn.Linear(4, 3),
    ).double()  # fmt: skip


def _train(model: nn.Module, batches, loss_fn) -> None:
    """4 SGD+momentum steps; loss_fn(model, x, y) is this process's part of the full loss."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    for x, y in batches:
        optimizer.zero_grad()
        loss_fn(model, x, y).backward()
        optimizer.step()


def _ddp_worker(rank: int, world_size: int, port: int) -> None:
    from normlab.layers.sync import SyncBatchNorm, convert_sync_batchnorm

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
        timeout=datetime.timedelta(seconds=60),
    )  # fmt: skip
    try:
        gen = torch.Generator().manual_seed(0)
        batches = [
            (torch.randn(8, 5, generator=gen, dtype=torch.float64) * 2 + 1,
             torch.randint(0, 3, (8,), generator=gen))
            for _ in range(4)
        ]  # fmt: skip
        # Reference: one process, plain BN, the mean loss over the whole batch of 8.
        reference = _model(seed=1)
        _train(reference, batches, lambda m, x, y: F.cross_entropy(m(x), y))

        for sizes in ((4, 4), (3, 5)):
            lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])

            def local_loss(m, x, y):
                # DDP averages gradients over the 2 processes; with unequal shards each
                # process's share is its loss sum / 8 (the global mean) times world_size.
                return F.cross_entropy(m(x[lo:hi]), y[lo:hi], reduction="sum") / 8 * world_size

            for sync in (True, False):
                model = _model(seed=1)
                if sync:
                    model = convert_sync_batchnorm(model)
                    assert sum(isinstance(m, SyncBatchNorm) for m in model.modules()) == 2
                ddp = nn.parallel.DistributedDataParallel(model)
                _train(ddp, batches, local_loss)
                pairs = list(zip(model.state_dict().items(), reference.state_dict().items()))
                if sync:  # parameters AND running statistics, on every process
                    for (name, ours), (_, ref) in pairs:
                        torch.testing.assert_close(ours, ref, **TOL, msg=f"{name} {sizes}")
                else:  # the control: per-process BN statistics train a different model
                    gap = max((o - r).abs().max().item() for (_, o), (_, r) in pairs)
                    assert gap > 1e-4, f"plain BN under DDP matched the full batch ({gap})"
    finally:
        dist.destroy_process_group()


def test_ddp_with_sync_bn_matches_single_process_training_on_the_full_batch():
    mp.spawn(_ddp_worker, args=(2, free_port()), nprocs=2, join=True)


def _tiny_config(**overrides) -> RunConfig:
    base = dict(
        dataset="synthetic", hidden=[16, 16], batch_size=16, epochs=1, max_steps=6, lr=0.1,
        optimizer="sgd", holdout_fraction=0.25, checkpoint_every_epochs=0, seed=3,
    )  # fmt: skip
    return RunConfig(**{**base, **overrides})


def _tiny_dataset():
    from normlab.data import load_dataset

    return load_dataset("synthetic", shape=(1, 12), num_classes=3, train_size=128, test_size=32)


def test_launch_two_processes_with_sync_bn_matches_fit_on_one():
    dataset = _tiny_dataset()
    single = fit(_tiny_config(), dataset=dataset)
    seen: list[tuple[int, int, dict]] = []
    result = launch(
        _tiny_config(nproc=2, sync_bn=True), nproc=2, dataset=dataset,
        on_metrics=lambda step, epoch, values: seen.append((step, epoch, values)),
        stop=mp.get_context("spawn").Event(),  # never set; an Event crosses to the processes
    )  # fmt: skip
    assert result.status == "finished" and result.steps == single.steps == 6
    # fp32 on both sides: only the order of the reductions differs (~1e-7). SGD, not Adam:
    # Adam turns rounding noise in gradients that are exactly 0 in theory (a linear bias just
    # before BN) into full-size steps. Plain BN per process is ~1e-2 off (see the test above).
    for name in ("train_loss", "test_loss", "test_acc", "holdout_acc_eval_mode"):
        assert result.final[name] == pytest.approx(single.final[name], rel=1e-5), name
    # rank 0's metrics reached this process, in order, once each.
    assert seen[0][2]["global_batch_size"] == 16.0 and seen[0][2]["bn_batch_size"] == 16.0
    steps = [step for step, _, _ in seen]
    assert steps == sorted(steps)
    assert sum("test_loss" in values for _, _, values in seen) == 1


def test_launch_reraises_the_error_of_a_process():
    # 15 samples cannot split evenly over 2 processes: fit raises in each process.
    with pytest.raises(ValueError, match="divisible by the 2 processes"):
        launch(_tiny_config(batch_size=15), nproc=2, dataset=_tiny_dataset())


def test_launch_under_torchrun_joins_the_env_group(monkeypatch):
    """RANK/WORLD_SIZE set (as torchrun does): no spawn, env:// rendezvous, fit, group left."""
    for key, value in dict(
        RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port())
    ).items():
        monkeypatch.setenv(key, value)
    seen = []
    result = launch(_tiny_config(max_steps=2), dataset=_tiny_dataset(), on_metrics=lambda *args: seen.append(args))
    assert result.status == "finished" and result.steps == 2 and seen
    assert not dist.is_initialized() and is_main_process()
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()


def test_launch_refuses_bad_arguments_before_starting_processes():
    import threading

    with pytest.raises(ValueError, match=r"arguments \(stop\) .* must be picklable"):
        launch(_tiny_config(nproc=2, sync_bn=True), nproc=2, stop=threading.Event())
    with pytest.raises(ValueError, match="pins every process to one GPU"):
        resolve_backend(_tiny_config(device="cuda:1"), nproc=2)
    with pytest.raises(ValueError, match="backend must be 'gloo' or 'nccl'"):
        launch(_tiny_config(nproc=2, sync_bn=True), nproc=2, backend="mpi")
    assert resolve_backend(_tiny_config(device="cpu"), nproc=2) == "gloo"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="^device: 'cuda' asks for a GPU, but CUDA is not available"):
            resolve_backend(_tiny_config(device="cuda"), nproc=2)
    with pytest.raises(ValueError, match="^device: expected cpu, cuda, cuda:N or auto, got 'tpu'$"):
        resolve_backend(_tiny_config(device="tpu"), nproc=2)
    assert "RANK" not in os.environ


class CommittingSink:
    """A launch caller's on_metrics with commit(), like the experiment runner's metric buffer:
    at each commit it records what was emitted so far and the step of the checkpoint on disk."""

    def __init__(self, checkpoint):
        self.checkpoint, self.emitted, self.commits = checkpoint, [], []

    def __call__(self, step, epoch, values):
        self.emitted.append(step)

    def commit(self):
        on_disk = read_header(self.checkpoint)["step"] if self.checkpoint.exists() else None
        self.commits.append((max(self.emitted), on_disk))


def test_launch_commits_rank_0s_metrics_before_each_checkpoint(tmp_path):
    # a data-parallel run's checkpoint must not be ahead of its stored metrics either: rank 0's
    # commit (before each checkpoint) reaches the caller after every row emitted before it
    path = tmp_path / "checkpoint.pt"
    sink = CommittingSink(path)
    result = launch(
        _tiny_config(nproc=2, epochs=3, max_steps=None, checkpoint_every_epochs=1),
        dataset=_tiny_dataset(),
        on_metrics=sink,
        checkpoint_path=path,
    )
    assert result.status == "finished" and result.steps == 18  # 96 train samples / 16 x 3
    # one commit per epoch's checkpoint, each after that epoch's last row and before its file
    assert sink.commits == [(6, None), (12, 6), (18, 12)]
    assert read_header(path)["step"] == 18 == sink.emitted[-1]
