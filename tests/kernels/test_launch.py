"""Layout views and tile choice of the launchers (pure Python: no kernel runs here)."""

import dataclasses

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


def test_adopted_knobs_leave_the_optional_code_paths_off():
    """Unrolls, pipelined loops, the wide finalize and the rows cap stay off until a GPU
    measurement adopts them (benchmarks/README.md)."""
    v = launch.view_of(torch.empty(256, 64, 32, 32, device="meta"))
    for kind, knobs in launch.KNOBS.items():
        assert (knobs.stats_unroll, knobs.bwd_unroll) == (1, 1), kind
        assert (knobs.stats_stages, knobs.bwd_stages) == (0, 0), kind
        assert (knobs.finalize_channels, knobs.finalize_rows, knobs.rows_cap) == (32, 64, 0), kind
    t = launch.plan_tiles(v, 4, 132, launch.KNOBS["planes"])
    assert (t.stats_stages, t.bwd_stages, t.num_stages, t.fin_block, t.fin_rows) == (None, None, 2, 32, 64)
    assert launch.plan_tiles(v, 2, 132, launch.KNOBS["planes"]).num_stages == 3


def test_using_knobs_plans_with_the_given_knobs_and_restores_the_adopted_ones():
    x = torch.empty(64, 8, 16, 16).to(memory_format=torch.channels_last)
    v, adopted = launch.view_of(x), launch.KNOBS
    wide = {**adopted, "rows": dataclasses.replace(adopted["rows"], finalize_channels=8)}
    assert launch.choose_tiles(v, 4, torch.device("cpu")).fin_block == 32
    with launch.using_knobs(wide):
        assert launch.KNOBS == wide
        assert launch.choose_tiles(v, 4, torch.device("cpu")).fin_block == 8
    assert launch.KNOBS is adopted
    with pytest.raises(RuntimeError, match="boom"), launch.using_knobs(wide):
        raise RuntimeError("boom")  # an error inside the block restores them too
    assert launch.KNOBS is adopted


@pytest.mark.parametrize("knobs", [{"rows": launch.KNOBS["rows"]}, {**launch.KNOBS, "planes": dict(programs_per_sm=2)}])
def test_using_knobs_wants_one_knobs_per_view_kind(knobs):
    with pytest.raises(
        ValueError,
        match=r"expected one Knobs per view kind \['planes', 'rows', "
        r"'rows16'\].*start from KNOBS",
    ):
        with launch.using_knobs(knobs):
            pass
    assert set(launch.KNOBS) == {"planes", "rows", "rows16"}


@pytest.mark.parametrize(
    "kwargs,text",
    [
        (dict(stats_unroll=3), r"stats_unroll must be one of \(1, 2\), got 3"),
        (dict(bwd_stages=1), r"bwd_stages must be one of \(0, 2, 3, 4\), got 1"),
        (dict(tile_elems=3000), "tile_elems must be a power of two.*got 3000; use e.g. 4096"),
        (dict(finalize_rows=0), "finalize_rows must be a power of two"),
        (dict(programs_per_sm=0), "programs_per_sm must be >= 1"),
        (dict(rows_cap=300), r"rows_cap must be a power of two \(or 0: no cap\).*use e.g. 512"),
    ],
)
def test_bad_knobs_get_one_clear_error(kwargs, text):
    with pytest.raises(ValueError, match=text):
        launch.Knobs(**{"programs_per_sm": 2, "tile_elems": 4096, **kwargs})


def test_rows_cap_shortens_only_tall_rows_tiles():
    """C=8 float32 channels-last: [8, 1024] tiles become [8, 512]; C=64 keeps [64, 128]."""
    capped = dataclasses.replace(launch.KNOBS["rows"], rows_cap=512)
    for shape, want in (((64, 8, 256, 256), (8, 512)), ((256, 64, 32, 32), (64, 128))):
        x = torch.empty(shape, device="meta").to(memory_format=torch.channels_last)
        v = launch.view_of(x)
        t = launch.plan_tiles(v, 4, 132, capped)
        assert (t.block_c, t.block_s) == want
        assert t.split * t.units_per_prog >= t.n_units == v.S // t.block_s
