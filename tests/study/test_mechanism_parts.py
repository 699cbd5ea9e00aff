"""Parts 7 (what BN does) and 8 (internal covariate shift): the measurements on a real small
model, and the sections on hand-made stored numbers with known answers."""

import numpy as np
import pandas as pd
import pytest
import torch

# These parts plug into the study package (normlab.study: common, protocol, registry); on a
# branch without it there is nothing to plug into yet.
pytest.importorskip("normlab.study.common", reason="the study package (normlab.study) is not in this tree")

from normlab.analysis.stats import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED
from normlab.data import load_dataset
from normlab.models import build_model
from normlab.study import mechanisms, part7_anatomy, part8_ics
from normlab.study.common import PartData
from normlab.study.registry import load_part
from normlab.train import metrics as M
from normlab.train.ics_probe import measure_shift

COLUMNS = ["run_id", "step", "epoch", "name", "value"]


def _runs(variants, seeds=range(10)):
    return pd.DataFrame(
        [
            {
                "run_id": f"{v}-{s}",
                "variant": v,
                "seed": s,
                "status": "finished",
                "lr": 1e-3,
                "steps": 300,
                "epochs": 3,
                "batch_size": 64,
                "hidden": "[100, 100]",
                "group": f"p/{v}",
            }
            for v in variants
            for s in seeds
        ]
    )


def _acc(values):
    return [
        (f"{v}-{s}", 300, 3, name, acc + 0.0005 * s)
        for v, acc in values.items()
        for s in range(10)
        for name in (M.HOLDOUT_ACC_EVAL_MODE, M.TEST_ACC)
    ]


@pytest.mark.parametrize("part", [part7_anatomy, part8_ics])
def test_the_files_parse_and_share_part_1s_runs(part):
    from normlab.study import part1_bn

    spec, quick = load_part(part), load_part(part, quick=True)
    assert [v.label for v in spec.variants] == [v.label for v in quick.variants]
    bn = {v.label: v.config.run_id for v in load_part(part1_bn).variants}
    mine = {v.label: v.config.run_id for v in spec.variants}
    assert mine["batch"] == bn["batch"]  # the same config: trained once for both parts


@pytest.mark.parametrize("norm", ["none", "batch", "noisy_batch"])
def test_probe_and_anatomy_on_a_real_model(norm):
    torch.manual_seed(0)
    model = build_model("mlp", (1, 12), 4, norm=norm, hidden=[16, 8])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(32, 1, 12, generator=g), torch.randint(0, 4, (32,), generator=g)) for _ in range(2)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    values = measure_shift(model, opt, batches)
    assert set(values) == {"ics/2/l2", "ics/2/cos", "ics/3/l2", "ics/3/cos", *mechanisms.LANDSCAPE_KEYS}
    assert all(np.isfinite(v) for v in values.values())
    assert -1 <= values["ics/2/cos"] <= 1 and values["landscape/beta"] > 0
    for key, value in model.state_dict().items():  # measured, not changed
        assert torch.equal(value, before[key]), key
    assert not opt.state  # Adam's state untouched by the probe's trial steps
    if norm != "none":
        shown = mechanisms.anatomy(model, batches[0][0])
        assert shown["anatomy/identity_error"] < 1e-12 * shown["anatomy/input_scale"]
        assert sum(v for k, v in shown.items() if k.startswith("anatomy/pre_hist/")) == 32 * 16
        assert len([k for k in shown if k.startswith("anatomy/gamma/")]) == 16


def _anatomy_rows(run_id):
    rows = [
        (run_id, 300, 3, "anatomy/hist_lo", -3.0),
        (run_id, 300, 3, "anatomy/hist_hi", 3.0),
        (run_id, 300, 3, "anatomy/identity_error", 4e-16),
        (run_id, 300, 3, "anatomy/input_scale", 2.5),
    ]
    rows += [(run_id, 300, 3, f"anatomy/{w}_hist/{i}", float(i)) for w in ("pre", "post") for i in range(4)]
    rows += [(run_id, 300, 3, f"anatomy/{w}/{c}", 1.0 + 0.1 * c) for w in ("gamma", "beta") for c in range(5)]
    return rows


def test_anatomy_section_shows_the_layer_and_tests_gamma_beta():
    metrics = pd.DataFrame(
        _acc({"batch": 0.70, part7_anatomy.AFFINE_OFF: 0.60}) + _anatomy_rows("batch-0"), columns=COLUMNS
    )
    sec = part7_anatomy.section(PartData(_runs(["batch", part7_anatomy.AFFINE_OFF]), metrics))
    assert [f.verdict.label for f in sec.findings] == [SUPPORTED]
    assert any("4.0e-16" in line and "seed 0" in line for line in sec.measured)
    assert [f.name for f in sec.figures] == ["anatomy_layer"]
    assert any("not run" in note for note in sec.notes)  # no BN-only runs in this store
    # BN-only vs random, when present: random is better here, so the claim is not supported
    both = [part7_anatomy.BN_ONLY, part7_anatomy.RANDOM_MATCHED]
    metrics = pd.DataFrame(_acc({"batch": 0.7, both[0]: 0.3, both[1]: 0.5}), columns=COLUMNS)
    sec = part7_anatomy.section(PartData(_runs(["batch", *both]), metrics))
    assert [f.verdict.label for f in sec.findings] == [NOT_SUPPORTED]
    assert any("not measured" in note for note in sec.notes)


def _ics_rows(variant, cos, beta, step):
    rows = []
    for s in range(10):
        rid = f"{variant}-{s}"
        rows += [
            (rid, step, 0, "ics/2/cos", cos + 0.01 * s),
            (rid, step, 0, "ics/3/cos", cos - 0.01 * s),
            (rid, step, 0, "ics/2/l2", 1.0),
            (rid, step, 0, "ics/3/l2", 3.0),
            (rid, step, 0, "landscape/beta", beta * (1 + 0.01 * s)),
            (rid, step, 0, "landscape/grad_change", beta * (1 + 0.01 * s)),
            (rid, step, 0, "landscape/loss_range", 0.1),
        ]
    return rows


def test_ics_section_with_santurkar_like_numbers():
    """With BN: ICS cosine lower (not reduced), noisy BN as good as BN, landscape 10x smoother;
    at init the numbers are the other way round, and only the end counts."""
    rows = _acc({"none": 0.60, "batch": 0.70, part8_ics.NOISY: 0.70})
    for variant, cos, beta in (("none", 0.9, 10.0), ("batch", 0.5, 1.0), (part8_ics.NOISY, 0.5, 1.0)):
        rows += _ics_rows(variant, cos, beta, 300) + _ics_rows(variant, 1.4 - cos, 11.0 - beta, 0)
    data = PartData(_runs(["none", "batch", part8_ics.NOISY]), pd.DataFrame(rows, columns=COLUMNS))
    end = part8_ics.per_run(data, ("none", "batch"), "end")
    assert end.set_index("run_id").loc["batch-3", "ics_cos"] == pytest.approx(0.5)  # mean over layers 2..3
    assert end.set_index("run_id").loc["none-0", "ics_l2"] == pytest.approx(2.0)
    sec = part8_ics.section(data)

    def label(head):
        (found,) = [f.verdict.label for f in sec.findings if f.claim.startswith(head)]
        return found

    assert label(part8_ics.CLAIM_ICS) == NOT_SUPPORTED
    assert label(part8_ics.CLAIM_NOISY) == NOT_SUPPORTED  # equal accuracies: the drop is ruled out
    assert label(part8_ics.CLAIM_NOISY_NONE) == SUPPORTED
    assert label(part8_ics.CLAIM_SMOOTH) == SUPPORTED
    assert label("With BN the gradient is more predictive") == SUPPORTED
    assert label("With BN the loss varies less") == INCONCLUSIVE  # 0.1 everywhere: no spread, no interval
    assert sec.measured[-1].startswith("Verdict on 'BN works by reducing internal covariate shift': not supported")
    assert "measurably smoother" in sec.measured[-1]
    assert {f.name for f in sec.figures} == {"ics_cosine", "ics_beta"}
    assert set(sec.table["when"]) == {"init", "end"}


def test_ics_synthesis_follows_the_verdicts():
    from normlab.analysis.render import Finding, Section
    from normlab.analysis.stats import Verdict

    def sec(ics, noisy, smooth):
        return Section(
            "t",
            "s",
            [
                Finding(f"{part8_ics.CLAIM_ICS} x", Verdict(ics, "", None)),
                Finding(f"{part8_ics.CLAIM_NOISY} x", Verdict(noisy, "", None)),
                Finding(f"{part8_ics.CLAIM_SMOOTH}: x", Verdict(smooth, "", None)),
            ],
        )

    assert "consistent with these numbers" in part8_ics.synthesis(sec(SUPPORTED, SUPPORTED, SUPPORTED))
    text = part8_ics.synthesis(sec(NOT_SUPPORTED, INCONCLUSIVE, SUPPORTED))
    assert "not supported here: BN did not measurably reduce ICS (the noisy-BN comparison inconclusive)" in text
    assert "inconclusive at these seeds" in part8_ics.synthesis(sec(INCONCLUSIVE, INCONCLUSIVE, INCONCLUSIVE))


def test_ics_over_training_section():
    """Points between init and end: a curve per variant, a table row per point, and the claim
    on the mean over the points after init (BN's cosine lower here: not supported)."""
    rows = _acc({"none": 0.60, "batch": 0.70, part8_ics.NOISY: 0.70})
    for variant, cos in (("none", 0.9), ("batch", 0.5), (part8_ics.NOISY, 0.4)):
        rows += _ics_rows(variant, cos, 1.0, 0) + _ics_rows(variant, cos, 1.0, 300)
        rows += _ics_rows(variant, cos - 0.1, 1.0, 100) + _ics_rows(variant, cos - 0.2, 1.0, 200)
    rows += [
        (f"{part8_ics.NOISY}-0", 300, 3, mechanisms.TRACE_DONE, 0.0),
        ("batch-0", 300, 3, mechanisms.TRACE_DONE, 1.0),
    ]
    data = PartData(_runs(["none", "batch", part8_ics.NOISY]), pd.DataFrame(rows, columns=COLUMNS))
    trace = part8_ics.over_training(data, ("none", "batch"))
    assert sorted(trace["step"].unique()) == [0, 100, 200, 300]
    point = trace.set_index(["run_id", "step"]).loc[("batch-3", 200)]
    assert point["ics_cos"] == pytest.approx(0.3) and point["ics_l2"] == pytest.approx(2.0)
    assert point["landscape/beta"] == pytest.approx(1.03)
    sec = part8_ics.section(data)
    (found,) = [f for f in sec.findings if f.claim.startswith(part8_ics.CLAIM_ICS_TRACE)]
    assert "3 measuring points after init (steps 100, 200, 300)" in found.claim
    assert found.verdict.label == NOT_SUPPORTED
    assert found.verdict.effect == pytest.approx(0.5 - 0.9)  # batch - none, mean of (c - 0.1, c - 0.2, c)
    assert [f.claim for f in sec.findings].count(found.claim) == 1
    assert {"ics_over_training", "ics_l2_over_training"} <= {f.name for f in sec.figures}
    table = sec.table.set_index(["when", "variant"])
    assert list(dict.fromkeys(sec.table["when"])) == ["init", "step 100", "step 200", "end"]
    assert table.loc[("step 100", "none"), "cos(G, G')"] == "0.800"
    assert "at steps 100, 200 " in sec.setup
    assert any("1 run(s) could not be replayed" in n for n in sec.notes)
    # without the points between: no such claim, figure or rows, and a note saying so
    plain = PartData(data.runs, data.metrics[~data.metrics["step"].isin([100, 200])])
    sec = part8_ics.section(plain)
    assert not [f for f in sec.findings if f.claim.startswith(part8_ics.CLAIM_ICS_TRACE)]
    assert "ics_over_training" not in {f.name for f in sec.figures}
    assert any("not measured between init and the end" in n for n in sec.notes)


def test_trace_every_gives_about_six_points():
    assert mechanisms.trace_every(25) == 5  # 0, 5, 10, 15, 20, 25
    assert mechanisms.trace_every(2) == 1 and mechanisms.trace_every(1) == 1


def test_measure_mechanisms_on_finished_runs_once(tmp_path):
    from normlab.experiments import runner
    from normlab.experiments.config import Experiment, PlannedRun
    from normlab.experiments.store import Store
    from normlab.study.finished import checkpoint
    from normlab.train.config import RunConfig

    runs = [
        PlannedRun(
            RunConfig(
                model="mlp",
                hidden=[100, 100],
                norm=norm,
                optimizer="adam",
                lr=3e-3,
                batch_size=64,
                epochs=3,
                holdout_fraction=0.8,
                checkpoint_every_epochs=1,
                seed=0,
            ),
            group=f"ics/{norm}",
        )
        for norm in ("none", "noisy_batch")
    ]
    runner.run_experiment(Experiment("t.eval", runs), tmp_path, executor="local", workers=1)
    configs = {r.run_id: r.config for r in runs}
    traced = runs[0].run_id
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the study's main process may use more threads than its workers (1)
    try:
        assert mechanisms.measure_mechanisms("t.eval", configs, tmp_path, traced={traced}) == 2
    finally:
        torch.set_num_threads(threads)
    with Store.open(tmp_path) as store:
        m = store.metrics_frame("t.eval")
    for run in runs:
        mine = m[(m["run_id"] == run.run_id) & (m["name"] == "ics/2/cos")]
        # at init and at the checkpoint; the traced run every epoch between (12 steps per epoch)
        assert sorted(mine["step"]) == ([0, 12, 24, 36] if run.run_id == traced else [0, 36])
        identity = m[(m["run_id"] == run.run_id) & (m["name"] == "anatomy/identity_error")]
        assert len(identity) == (run.config.norm != "none")
    done = m[m["name"] == mechanisms.TRACE_DONE]
    assert list(done["run_id"]) == [traced] and list(done["value"]) == [1.0]
    # again, every run traced: nothing is measured twice, the other run gets its points
    assert mechanisms.measure_mechanisms("t.eval", configs, tmp_path) == 0
    with Store.open(tmp_path) as store:
        again = store.metrics_frame("t.eval")
    assert len(again[again["run_id"] == traced]) == len(m[m["run_id"] == traced])
    noisy = again[(again["run_id"] == runs[1].run_id) & (again["name"] == "ics/2/cos")]
    assert sorted(noisy["step"]) == [0, 12, 24, 36]
    # a replay that does not end where the checkpoint is contributes no points
    state = checkpoint(tmp_path, traced)
    state["model"]["blocks.0.linear.weight"] += 1e-6
    assert mechanisms.trace(runs[0].config, load_dataset("mnist1d"), state) == [(36, 3, mechanisms.TRACE_DONE, 0.0)]
