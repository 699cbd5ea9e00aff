"""The kernel benchmark's candidate knobs and sweep plan (pure Python: no kernel runs here)."""

import pytest
import torch

pytest.importorskip("triton")

from normlab.bench.kernels import tuning  # noqa: E402
from normlab.bench.kernels.matrix import cases  # noqa: E402
from normlab.kernels import launch  # noqa: E402


def test_sweep_plan_isolates_each_change_on_the_large_rows():
    plan = tuning.sweep_plan(cases(quick=False))
    assert len(plan) == 34
    assert [p["change"] for p in plan] == sorted(
        (p["change"] for p in plan), key=tuning.SWEEP_ORDER.index
    )  # budget cuts the tail
    assert {p["dtype"] for p in plan} == set(tuning.SWEEP_DTYPES)
    # the rows-view finalize changes no NCHW plan, so it is not timed there
    assert all(p["layout"] != "nchw" for p in plan if p["change"] == "finalize")


@pytest.mark.parametrize("shape", [(3, 5, 7, 9), (256, 64, 32, 32), (64, 512, 7, 7), (8192, 512)])
@pytest.mark.parametrize("change", [*tuning.V4_CHANGES, "v4"])
def test_gpu_plans_of_every_candidate_cover_every_unit_once(shape, change):
    """Plans for an H100 (132 SMs) with each knob setting the benchmark times."""
    v = launch.view_of(torch.empty(shape, device="meta"))
    for elem_size in (4, 2):
        knobs = tuning.knobs_with(change)[launch.view_kind(v, elem_size)]
        t = launch.plan_tiles(v, elem_size, 132, knobs)
        assert t.split * t.units_per_prog >= t.n_units > (t.split - 1) * t.units_per_prog
        assert (t.stats_unroll, t.bwd_unroll) == (knobs.stats_unroll, knobs.bwd_unroll)
        assert (t.fin_block, t.fin_rows) == (knobs.finalize_channels, knobs.finalize_rows)
        assert (t.stats_stages, t.bwd_stages) == (knobs.stats_stages or None, knobs.bwd_stages or None)


def test_knobs_with_isolates_one_change():
    unroll = tuning.knobs_with("unroll")["rows"]
    assert (unroll.stats_unroll, unroll.bwd_unroll) == (2, 2)
    assert unroll.finalize_channels == launch.KNOBS["rows"].finalize_channels
    stages = tuning.knobs_with("stages")["planes"]
    assert (stages.stats_stages, stages.bwd_stages, stages.stats_unroll) == (3, 3, 1)
    finalize = tuning.knobs_with("finalize")
    assert finalize["rows16"].finalize_channels == 8 and finalize["rows16"].stats_unroll == 1
    assert finalize["planes"] == launch.KNOBS["planes"]  # the rows-view finalize only
    assert tuning.knobs_with("v4") == tuning.V4_KNOBS
    assert tuning.knobs_with("rows_cap")["rows16"] == launch.KNOBS["rows16"]
    with pytest.raises(ValueError, match=r"unknown v4 change 'fast'; expected one of"):
        tuning.knobs_with("fast")


def test_candidates_start_from_the_adopted_knobs():
    """A candidate differs from launch.KNOBS only in the knobs it names."""
    for kind, knobs in tuning.V4_KNOBS.items():
        assert (knobs.programs_per_sm, knobs.tile_elems) == (
            launch.KNOBS[kind].programs_per_sm,
            launch.KNOBS[kind].tile_elems,
        )
    for change, (values, kinds) in tuning.V4_CHANGES.items():
        for kind, knobs in tuning.knobs_with(change).items():
            changed = {name for name in values if getattr(knobs, name) != getattr(launch.KNOBS[kind], name)}
            assert changed == (set(values) if kind in kinds else set()), (change, kind)
