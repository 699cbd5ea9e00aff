"""SyncBatchNorm vs BatchNorm on the whole batch (2 gloo processes), conversion and revert.

The multi-process checks run in ONE spawn (spawning costs seconds on 2 cores); the worker loops
over every case and raises on the first mismatch, which torch.multiprocessing.spawn re-raises
here with the worker's traceback.
"""

from __future__ import annotations

import datetime
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from normlab.layers.batchnorm import BatchNorm, BatchNorm2d
from normlab.layers.sync import SyncBatchNorm, convert_sync_batchnorm, revert_sync_batchnorm
from normlab.layers.variants import BatchRenorm, GhostBatchNorm

TOL = dict(rtol=1e-10, atol=1e-10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(rank: int, world_size: int, port: int, backend: str = "gloo") -> None:
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=60),
    )


def _bn_pair(channels: int, momentum: float | None, affine: bool, seed: int):
    """(torch BatchNorm, SyncBatchNorm) in float64 with the same random affine parameters."""
    ref = nn.BatchNorm1d(channels, momentum=momentum, affine=affine, dtype=torch.float64)
    ref._check_input_dim = lambda x: None  # torch's BN math is rank-agnostic; only the check isn't
    ours = SyncBatchNorm(channels, momentum=momentum, affine=affine, dtype=torch.float64)
    if affine:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            ref.weight.copy_(torch.rand(channels, generator=gen, dtype=torch.float64) + 0.5)
            ref.bias.copy_(torch.randn(channels, generator=gen, dtype=torch.float64))
            ours.weight.copy_(ref.weight)
            ours.bias.copy_(ref.bias)
    return ref, ours


def _check_case(rank, shape, sizes, momentum, affine, offset, seed, device="cpu") -> None:
    """Ranks hold x[: sizes[0]] and x[sizes[0]:]; compare with BN on x over 3 training steps."""
    channels = shape[1]
    ref, ours = _bn_pair(channels, momentum, affine, seed)
    ref, ours = ref.to(device), ours.to(device)
    lo = sum(sizes[:rank])
    hi = lo + sizes[rank]
    for step in range(3):
        gen = torch.Generator().manual_seed(seed * 100 + step)
        x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + offset).to(device)
        probe = torch.randn(shape, generator=gen, dtype=torch.float64).to(device)  # sum(y*probe)
        x_full = x.clone().requires_grad_(True)
        y_full = ref(x_full)
        (y_full * probe).sum().backward()
        x_local = x[lo:hi].clone().requires_grad_(True)
        y_local = ours(x_local)
        (y_local * probe[lo:hi]).sum().backward()
        case = f"shape={shape} sizes={sizes} momentum={momentum} affine={affine} step={step}"
        torch.testing.assert_close(y_local, y_full[lo:hi], **TOL, msg=f"output {case}")
        torch.testing.assert_close(x_local.grad, x_full.grad[lo:hi], **TOL, msg=f"dx {case}")
        if affine:
            # Each rank holds its local share of dgamma/dbeta; DDP sums them (here: all_reduce).
            for name in ("weight", "bias"):
                local = getattr(ours, name).grad.clone()
                dist.all_reduce(local)
                full = getattr(ref, name).grad
                torch.testing.assert_close(local, full, **TOL, msg=f"d{name} {case}")
            for module in (ref, ours):
                module.weight.grad = None
                module.bias.grad = None
        torch.testing.assert_close(ours.running_mean, ref.running_mean, **TOL)
        torch.testing.assert_close(ours.running_var, ref.running_var, **TOL)
        assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == step + 1
    # Eval mode uses the (identical) running stats and never communicates: rank 1 alone.
    if rank == 1:
        ref.eval(), ours.eval()
        x = torch.randn(shape, dtype=torch.float64, device=device) + offset
        torch.testing.assert_close(ours(x), ref(x), **TOL)
    dist.barrier()


def _parity_worker(rank: int, world_size: int, port: int, backend: str, device: str) -> None:
    _init(rank, world_size, port, backend)
    if device == "cuda":  # NCCL: one GPU per process; gloo may share one
        device = f"cuda:{rank if backend == 'nccl' else 0}"
        torch.cuda.set_device(device)
    try:
        cases = [
            # (global shape, per-rank sizes): 1-D (N, C), 2-D (N, C, L), 3-D (N, C, H, W), 5-D.
            ((8, 3), (4, 4)),
            ((7, 3), (2, 5)),
            ((6, 4, 5), (3, 3)),
            ((5, 4, 5), (4, 1)),
            ((4, 2, 3, 5), (2, 2)),
            ((5, 2, 3, 5), (3, 2)),
            ((3, 2, 2, 3, 2), (1, 2)),
            ((4, 3, 2), (4, 0)),  # an empty shard: rank 1 contributes nothing
        ]
        for i, (shape, sizes) in enumerate(cases):
            _check_case(rank, shape, sizes, 0.1, affine=True, offset=0.0, seed=i, device=device)
        # Cumulative running average, no affine, and a large offset (stability of the merge).
        _check_case(rank, (6, 3, 4), (2, 4), None, affine=False, offset=0.0, seed=20, device=device)
        _check_case(rank, (6, 3, 4), (4, 2), 0.3, affine=True, offset=1e4, seed=21, device=device)

        # One value per channel in total (1 sample on rank 0, none on rank 1): a clear error
        # raised on every rank alike, never a hang.
        bn = SyncBatchNorm(3, dtype=torch.float64, device=device)
        x = torch.randn(1 - rank, 3, dtype=torch.float64, device=device)
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            bn(x)

        # A sub-group of one process is plain BatchNorm (no collective; rank 1 skips it).
        solo = dist.new_group([0])
        if rank == 0:
            ref, ours = _bn_pair(3, 0.1, True, seed=30)
            ref, ours = ref.to(device), ours.to(device)
            ours.process_group = solo
            x = torch.randn(6, 3, 4, dtype=torch.float64, device=device)
            torch.testing.assert_close(ours(x), ref(x), **TOL)
            torch.testing.assert_close(ours.running_var, ref.running_var, **TOL)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_processes_match_batchnorm_on_the_whole_batch():
    mp.spawn(_parity_worker, args=(2, _free_port(), "gloo", "cpu"), nprocs=2, join=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["gloo", "nccl"])
def test_two_gpu_processes_match_batchnorm_on_the_whole_batch(backend):
    if backend == "nccl" and torch.cuda.device_count() < 2:
        pytest.skip("NCCL needs one GPU per process: 2 GPUs")
    mp.spawn(_parity_worker, args=(2, _free_port(), backend, "cuda"), nprocs=2, join=True)


@pytest.mark.parametrize("shape", [(6, 3), (6, 3, 5), (4, 3, 2, 3), (2, 3, 2, 2, 3)])
def test_outside_a_process_group_it_is_exactly_batchnorm(shape):
    """Bit-identical to normlab's BatchNorm (same code path), and matches torch's to 1e-10."""
    assert not dist.is_initialized()
    torch_bn, ours = _bn_pair(3, None, True, seed=1)
    normlab_bn = BatchNorm(3, momentum=None, dtype=torch.float64)
    normlab_bn.load_state_dict(ours.state_dict())
    for step in range(3):
        if step == 2:  # eval mode: the running statistics
            for module in (torch_bn, ours, normlab_bn):
                module.eval()
        x = torch.randn(shape, dtype=torch.float64)
        results = []
        for module in (torch_bn, ours, normlab_bn):
            xi = x.clone().requires_grad_(True)
            y = module(xi)
            y.square().sum().backward()
            results.append((y, xi.grad))
        (y_torch, dx_torch), (y, dx), (y_normlab, dx_normlab) = results
        torch.testing.assert_close(y, y_torch, **TOL)
        torch.testing.assert_close(dx, dx_torch, **TOL)
        torch.testing.assert_close(y, y_normlab, rtol=0, atol=0)
        torch.testing.assert_close(dx, dx_normlab, rtol=0, atol=0)
    for name in ("weight", "bias"):
        torch.testing.assert_close(getattr(ours, name).grad, getattr(torch_bn, name).grad, **TOL)
    torch.testing.assert_close(ours.running_var, torch_bn.running_var, **TOL)
    assert ours.state_dict().keys() == torch_bn.state_dict().keys()


def test_bad_input_gets_one_clear_error():
    bn = SyncBatchNorm(4)
    with pytest.raises(ValueError, match=r"expected 2D to 5D input \(got 1D input\)"):
        bn(torch.randn(4))
    with pytest.raises(ValueError, match=r"expected 4 channels in dim 1, got 3"):
        bn(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"more than 1 value per channel"):
        bn(torch.randn(1, 4))


class _ScaledBN(nn.BatchNorm2d):
    """A user subclass with extra behaviour that converting must not drop silently."""

    def forward(self, x):
        return 2 * super().forward(x)


def _mixed_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3),
        nn.BatchNorm2d(4, momentum=0.2),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 4, 1), BatchNorm2d(4, eps=1e-3, impl="reference")),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
        nn.BatchNorm1d(5, affine=False),
    )


def test_convert_keeps_state_and_revert_restores_the_classes():
    torch.manual_seed(0)
    model = _mixed_model()
    x = torch.randn(6, 2, 6, 6)
    model(x)  # move the running stats off their initial values
    model.eval()
    expected = model(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    classes = [type(m) for m in model.modules()]
    params = list(model.parameters())

    synced = convert_sync_batchnorm(model)
    sync_layers = [m for m in synced.modules() if isinstance(m, SyncBatchNorm)]
    assert len(sync_layers) == 3
    assert sync_layers[0].momentum == 0.2 and sync_layers[1].eps == 1e-3
    assert not sync_layers[2].affine and not sync_layers[0].training
    assert all(a is b for a, b in zip(synced.parameters(), params))  # the same Parameters
    assert synced.state_dict().keys() == before.keys()
    for key, value in synced.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    torch.testing.assert_close(synced(x), expected, rtol=0, atol=0)

    reverted = revert_sync_batchnorm(synced)
    assert [type(m) for m in reverted.modules()] == classes
    assert all(a is b for a, b in zip(reverted.parameters(), params))
    torch.testing.assert_close(reverted(x), expected, rtol=0, atol=0)


def test_convert_refuses_batchnorm_subclasses_with_their_own_behaviour():
    model = nn.Sequential(nn.Linear(3, 4), nn.Sequential(_ScaledBN(4)))
    with pytest.raises(TypeError, match=r"cannot convert 1\.0 \(_ScaledBN\)"):
        convert_sync_batchnorm(model)
    with pytest.raises(TypeError, match=r"LazyBatchNorm1d"):
        convert_sync_batchnorm(nn.LazyBatchNorm1d())
    for cls in (GhostBatchNorm, BatchRenorm):
        with pytest.raises(TypeError, match=cls.__name__):
            convert_sync_batchnorm(nn.Sequential(cls(4)))


def test_a_root_batchnorm_and_a_direct_syncbatchnorm_convert_and_revert():
    bn = nn.BatchNorm3d(2)
    sync = convert_sync_batchnorm(bn)
    assert type(sync) is SyncBatchNorm and sync.weight is bn.weight
    assert type(revert_sync_batchnorm(sync)) is nn.BatchNorm3d
    torch_sync = convert_sync_batchnorm(nn.SyncBatchNorm(2, momentum=None))
    assert type(torch_sync) is SyncBatchNorm and torch_sync.momentum is None
    assert type(revert_sync_batchnorm(torch_sync)) is nn.SyncBatchNorm
    frozen = BatchNorm2d(2, impl="reference").freeze()
    synced = convert_sync_batchnorm(frozen)
    assert synced.frozen and synced.impl == "reference"
    back = revert_sync_batchnorm(synced)
    assert type(back) is BatchNorm2d and back.frozen and back.impl == "reference"
    direct = SyncBatchNorm(2)
    assert convert_sync_batchnorm(direct) is direct
    plain = revert_sync_batchnorm(direct)
    assert not isinstance(plain, SyncBatchNorm)
    x = torch.randn(3, 2, 4)  # any rank, like SyncBatchNorm
    torch.testing.assert_close(plain(x), SyncBatchNorm(2)(x), rtol=0, atol=0)
