"""BatchNorm modules against torch.nn.BatchNorm1d/2d/3d: outputs, gradients, buffers, state."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from normlab.layers import BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormBase

PAIRS = {
    2: (BatchNorm1d, nn.BatchNorm1d),
    3: (BatchNorm1d, nn.BatchNorm1d),
    4: (BatchNorm2d, nn.BatchNorm2d),
    5: (BatchNorm3d, nn.BatchNorm3d),
}
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def _random_shapes(count, seed=0):
    """`count` random (N, C, *) shapes for each rank from 2 to 5, small enough for CI."""
    g = torch.Generator().manual_seed(seed)
    shapes = []
    for rank in (2, 3, 4, 5):
        for _ in range(count):
            dims = torch.randint(2, 5, (rank,), generator=g).tolist()
            shapes.append(tuple(dims))
    return shapes


def _run_sequence(ours, theirs, shape, dtype, modes):
    """Feed both modules the same inputs in the given train/eval modes; compare everything."""
    g = torch.Generator().manual_seed(sum(shape))
    for step, mode in enumerate(modes):
        ours.train(mode == "train")
        theirs.train(mode == "train")
        x = (torch.randn(shape, generator=g, dtype=dtype) * (1 + step) + step).requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        y, y_ref = ours(x), theirs(x_ref)
        torch.testing.assert_close(y, y_ref, **TOL[dtype])
        dy = torch.randn(shape, generator=g, dtype=dtype)
        y.backward(dy)
        y_ref.backward(dy)
        torch.testing.assert_close(x.grad, x_ref.grad, **TOL[dtype])
    if ours.affine:
        torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, **TOL[dtype])
        torch.testing.assert_close(ours.bias.grad, theirs.bias.grad, **TOL[dtype])
    for name, buf in theirs.named_buffers():
        torch.testing.assert_close(dict(ours.named_buffers())[name], buf, **TOL[dtype])


@pytest.mark.parametrize("impl", ["reference", "torch"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("rank", [2, 3, 4, 5])
def test_parity_with_torch(rank, momentum, affine, track, dtype, impl):
    ours_cls, torch_cls = PAIRS[rank]
    for shape in [s for s in _random_shapes(2) if len(s) == rank]:
        c = shape[1]
        kw = dict(momentum=momentum, affine=affine, track_running_stats=track, dtype=dtype)
        theirs = torch_cls(c, **kw)
        if affine:  # non-trivial gamma/beta
            with torch.no_grad():
                theirs.weight.uniform_(0.5, 1.5)
                theirs.bias.uniform_(-1, 1)
        for ours in (ours_cls(c, impl=impl, **kw), BatchNorm(c, impl=impl, **kw)):
            ours.load_state_dict(theirs.state_dict())
            reference = copy.deepcopy(theirs)
            _run_sequence(ours, reference, shape, dtype, ["train", "train", "eval", "train"])


def test_state_dict_round_trip_with_torch():
    theirs = nn.BatchNorm2d(5)
    theirs.train()
    theirs(torch.randn(4, 5, 3, 3))
    ours = BatchNorm2d(5)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    back = nn.BatchNorm2d(5)
    back.load_state_dict(ours.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)
    assert ours.num_batches_tracked.item() == 1


def test_old_state_dict_without_num_batches_tracked_loads():
    state = nn.BatchNorm1d(3).state_dict()
    del state["num_batches_tracked"]
    state._metadata[""]["version"] = 1
    bn = BatchNorm1d(3)
    bn.load_state_dict(state)
    assert bn.num_batches_tracked.item() == 0


def test_buffers_and_parameters_like_torch():
    bn = BatchNorm2d(4, affine=False, track_running_stats=False)
    assert bn.weight is None and bn.running_mean is None and bn.num_batches_tracked is None
    assert list(bn.state_dict()) == list(nn.BatchNorm2d(4, affine=False, track_running_stats=False).state_dict())
    assert repr(BatchNorm1d(3)) == repr(nn.BatchNorm1d(3))  # torch's own text


@pytest.mark.parametrize(
    "cls, bad_rank, text, fix",
    [
        (BatchNorm1d, 4, "expected 2D or 3D input (got 4D input)", "use normlab.layers.BatchNorm"),
        (BatchNorm2d, 3, "expected 4D input (got 3D input)", "use normlab.layers.BatchNorm"),
        (BatchNorm3d, 4, "expected 5D input (got 4D input)", "use normlab.layers.BatchNorm"),
        # BatchNorm already takes every rank: pointing to itself would not help.
        (BatchNorm, 6, "expected 2D to 5D input (got 6D input)", "x.flatten(2)"),
        (BatchNorm, 1, "expected 2D to 5D input (got 1D input)", "x.unsqueeze(0)"),
    ],
)
def test_wrong_rank_message(cls, bad_rank, text, fix):
    with pytest.raises(ValueError) as err:
        cls(3)(torch.randn(*([3] * bad_rank)))
    assert text in str(err.value) and fix in str(err.value)


def test_wrong_channels_and_single_value_messages():
    for error in (ValueError, RuntimeError):  # torch raises RuntimeError; ours is both
        with pytest.raises(error, match="expected 3 channels in dim 1, got 5"):
            BatchNorm2d(3)(torch.randn(2, 5, 4, 4))
    with pytest.raises(ValueError, match="more than 1 value per channel when training"):
        BatchNorm1d(3)(torch.randn(1, 3))
    BatchNorm1d(3).eval()(torch.randn(1, 3))  # fine in eval mode, as torch


def test_constructor_errors():
    with pytest.raises(ValueError, match="unknown batch norm implementation 'cuda'"):
        BatchNorm(3, impl="cuda")
    with pytest.raises(ValueError, match="momentum must be in"):
        BatchNorm(3, momentum=1.5)
    with pytest.raises(ValueError, match="num_features must be a positive int"):
        BatchNorm(0)


def test_eval_without_running_stats_uses_batch_stats():
    bn = BatchNorm(3, track_running_stats=False).eval()
    y = bn(torch.randn(16, 3) * 4 + 9)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-5, rtol=0)


def test_freeze_is_a_mode_that_survives_train():
    bn = BatchNorm(3, impl="reference")
    bn(torch.randn(8, 3) + 2)  # non-trivial running statistics
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    bn.freeze().train()
    x = torch.randn(8, 3, requires_grad=True)
    y = bn(x)
    expected = (x - before["running_mean"]) / torch.sqrt(before["running_var"] + bn.eps)
    torch.testing.assert_close(y, expected)
    y.sum().backward()
    assert bn.weight.grad is not None  # gamma/beta still learn
    for key, value in bn.state_dict().items():
        assert torch.equal(value, before[key]), key
    bn.unfreeze()
    bn(torch.randn(8, 3))
    assert bn.num_batches_tracked.item() == 2
    with pytest.raises(ValueError, match="track_running_stats=False"):
        BatchNorm(3, track_running_stats=False).freeze()


class _HookedBN(BatchNorm):
    """Overrides only the statistics hook, as SyncBatchNorm-like subclasses do."""

    def batch_stats(self, x):
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dims)
        var = ((x - mean.view(1, -1, *[1] * (x.dim() - 2))) ** 2).mean(dims)
        return mean, var, x.numel() // x.shape[1]


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_stats_hook_matches_torch(momentum):
    ours = _HookedBN(3, momentum=momentum, dtype=torch.float64)
    theirs = nn.BatchNorm2d(3, momentum=momentum, dtype=torch.float64)
    _run_sequence(ours, theirs, (4, 3, 2, 3), torch.float64, ["train", "train", "eval", "train"])


def test_half_and_bfloat16_inputs():
    for dtype in (torch.bfloat16, torch.float16):
        bn = BatchNorm(3, impl="reference")
        x = torch.randn(8, 3, 4)
        y = bn(x.to(dtype))
        assert y.dtype == dtype
        want = BatchNorm(3)(x)
        torch.testing.assert_close(y.float(), want, atol=3e-2, rtol=0)


def test_subclass_of_base_class():
    for cls in (BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d):
        assert issubclass(cls, BatchNormBase)


def test_bias_false_on_a_torch_without_the_bias_argument(monkeypatch):
    # torch < 2.13 (the GPU machine's 2.11) has no `bias` argument: normlab removes beta itself.
    from normlab.layers import batchnorm

    monkeypatch.setattr(batchnorm, "_TORCH_TAKES_BIAS", False)
    bn = BatchNorm2d(3, bias=False)
    assert bn.bias is None and bn.weight is not None
    assert list(bn.state_dict()) == list(nn.BatchNorm2d(3, bias=False).state_dict())
    assert BatchNorm2d(3).bias is not None
