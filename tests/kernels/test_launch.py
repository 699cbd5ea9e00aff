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


@pytest.mark.parametrize("shape", [(3, 5, 7, 9), (256, 64, 32, 32), (64, 512, 7, 7), (8192, 512)])
@pytest.mark.parametrize("change", [*launch.V4_CHANGES, "v4"])
def test_gpu_plans_with_v4_knobs_cover_every_unit_once(shape, change):
    """Plans for an H100 (132 SMs) with each knob setting the benchmark times."""
    v = launch.view_of(torch.empty(shape, device="meta"))
    for elem_size in (4, 2):
        knobs = launch.knobs_with(change)[launch.view_kind(v, elem_size)]
        t = launch.plan_tiles(v, elem_size, 132, knobs)
        assert t.split * t.units_per_prog >= t.n_units > (t.split - 1) * t.units_per_prog
        assert (t.stats_unroll, t.bwd_unroll) == (knobs.stats_unroll, knobs.bwd_unroll)
        assert (t.fin_block, t.fin_rows) == (knobs.finalize_channels, knobs.finalize_rows)
        assert (t.stats_stages, t.bwd_stages) == (knobs.stats_stages or None,
                                                  knobs.bwd_stages or None)


def test_default_knobs_are_v3_1():
    """v4 knobs stay off until measured: the shipped plan is v3.1's."""
    v = launch.view_of(torch.empty(256, 64, 32, 32, device="meta"))
    for kind, knobs in launch.KNOBS.items():
        assert (knobs.stats_unroll, knobs.bwd_unroll) == (1, 1), kind
        assert (knobs.stats_stages, knobs.bwd_stages) == (0, 0), kind
        assert (knobs.finalize_channels, knobs.finalize_rows, knobs.rows_cap) == (32, 64, 0), kind
    t = launch.plan_tiles(v, 4, 132, launch.KNOBS["planes"])
    assert (t.stats_stages, t.bwd_stages, t.num_stages, t.fin_block, t.fin_rows) == \
        (None, None, 2, 32, 64)
    assert launch.plan_tiles(v, 2, 132, launch.KNOBS["planes"]).num_stages == 3


def test_knobs_with_isolates_one_change():
    unroll = launch.knobs_with("unroll")["rows"]
    assert (unroll.stats_unroll, unroll.bwd_unroll) == (2, 2)
    assert unroll.finalize_channels == launch.KNOBS["rows"].finalize_channels
    stages = launch.knobs_with("stages")["planes"]
    assert (stages.stats_stages, stages.bwd_stages, stages.stats_unroll) == (3, 3, 1)
    finalize = launch.knobs_with("finalize")
    assert finalize["rows16"].finalize_channels == 8 and finalize["rows16"].stats_unroll == 1
    assert finalize["planes"] == launch.KNOBS["planes"]  # the rows-view finalize only
    assert launch.knobs_with("v4") == launch.V4_KNOBS
    assert launch.knobs_with("rows_cap")["rows16"] == launch.KNOBS["rows16"]
    with pytest.raises(ValueError, match=r"unknown v4 change 'fast'; expected one of"):
        launch.knobs_with("fast")


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
    capped = launch.knobs_with("rows_cap")["rows"]
    for shape, want in (((64, 8, 256, 256), (8, 512)), ((256, 64, 32, 32), (64, 128))):
        x = torch.empty(shape, device="meta").to(memory_format=torch.channels_last)
        v = launch.view_of(x)
        t = launch.plan_tiles(v, 4, 132, capped)
        assert (t.block_c, t.block_s) == want
        assert t.split * t.units_per_prog >= t.n_units == v.S // t.block_s
