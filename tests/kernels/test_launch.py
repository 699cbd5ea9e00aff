"""Layout views and tile choice of the launchers (pure Python: no kernel runs here)."""

import pytest
import torch

pytest.importorskip("triton")

from normlab.kernels import launch  # noqa: E402


def test_nchw_is_viewed_as_planes():
    v = launch.view_of(torch.empty(2, 3, 4, 5))
    assert (v.N, v.C, v.S, v.sn, v.sc, v.ss, v.channels_last) == (2, 3, 20, 60, 20, 1, False)
    assert v.count == 40


@pytest.mark.parametrize(
    "x",
    [
        torch.empty(2, 3, 4, 5).to(memory_format=torch.channels_last),
        torch.empty(2, 3, 2, 2, 5).to(memory_format=torch.channels_last_3d),
        torch.empty(2, 3, 20).transpose(1, 2).contiguous().transpose(1, 2),  # (N, C, L) as NLC
        torch.empty(40, 3),
        torch.empty(40, 3, 1),
    ],
)
def test_channel_inner_layouts_are_viewed_as_rows(x):
    v = launch.view_of(launch.make_dense(x))
    assert (v.N, v.C, v.S, v.sn, v.sc, v.ss, v.channels_last) == (1, 3, 40, 0, 1, 3, True)


def test_make_dense_copies_only_strided_inputs():
    x = torch.empty(2, 3, 4, 10)
    assert launch.make_dense(x) is x
    cl = x.to(memory_format=torch.channels_last)
    assert launch.make_dense(cl) is cl
    strided = x[..., ::2]
    dense = launch.make_dense(strided)
    assert dense.is_contiguous() and dense.shape == strided.shape


@pytest.mark.parametrize("shape", [(3, 5, 7, 9), (2, 3, 23, 25), (64, 512, 7, 7), (37, 13)])
def test_tiles_cover_every_unit_once(shape):
    v = launch.view_of(torch.empty(shape))
    t = launch.choose_tiles(v, 4, torch.device("cpu"))
    assert t.block_c & (t.block_c - 1) == 0 and t.block_s & (t.block_s - 1) == 0
    assert t.n_sblocks * t.block_s >= v.S > (t.n_sblocks - 1) * t.block_s
    assert t.n_units == v.N * t.n_sblocks
    # The programs' ranges [p*upp, (p+1)*upp) cover all units and none is empty.
    assert t.split * t.units_per_prog >= t.n_units > (t.split - 1) * t.units_per_prog
