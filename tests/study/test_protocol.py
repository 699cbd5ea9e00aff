"""The shared protocol: part files parse strictly, the lr is chosen on held-out data only (a
poisoned test split changes nothing), ties and divergence are handled, the test value is read
at the best held-out epoch."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from normlab.experiments import runner
from normlab.experiments.config import Experiment
from normlab.experiments.errors import ConfigError
from normlab.experiments.store import Store
from normlab.study import protocol as P
from normlab.train import metrics as M

TINY = {
    "base": {
        "dataset": "mnist1d",
        "hidden": [16],
        "batch_size": 32,
        "epochs": 2,
        "max_steps": 30,
        "holdout_fraction": 0.2,
        "checkpoint_every_epochs": 0,
    },
    "variants": {"none": {"norm": "none"}, "batch": {"norm": "batch"}},
}
PROTO = P.Protocol(lr_grid=(1e-3, 1e-1), selection_seeds=(7,), eval_seeds=(0, 1))


def test_parse_part_builds_variants_and_runs():
    spec = {
        **TINY,
        "fixed": {"none @ 1e-3": {"norm": "none", "lr": 1e-3}},
        "arms": {"batch + wd": {"of": "batch", "optim.weight_decay": 1e-3}},
    }
    part = P.parse_part("tiny", spec, PROTO)
    assert [v.label for v in part.variants] == ["none", "batch", "none @ 1e-3", "batch + wd"]
    sel = P.selection_runs(part, PROTO)
    assert len(sel) == 2 * 2 * 1 and {r.config.seed for r in sel} == {7}
    assert {r.group for r in sel} == {"tiny/none", "tiny/batch"}
    chosen = {
        "none": P.Selection("none", pd.DataFrame(), 1e-1, True),
        "batch": P.Selection("batch", pd.DataFrame(), 1e-3, True),
    }
    ev = P.evaluation_runs(part, PROTO, chosen)
    by_group = {g: [r.config for r in ev if r.group == g] for g in {r.group for r in ev}}
    assert {c.lr for c in by_group["tiny/none"]} == {1e-1}
    assert {c.lr for c in by_group["tiny/none @ 1e-3"]} == {1e-3}
    assert {(c.lr, c.optim.weight_decay) for c in by_group["tiny/batch + wd"]} == {(1e-3, 1e-3)}
    assert all({c.seed for c in cs} == {0, 1} for cs in by_group.values())
    # no selection for a variant (every lr diverged): no evaluation runs for it or its arms
    ev = P.evaluation_runs(part, PROTO, {"none": chosen["none"]})
    assert {r.group for r in ev} == {"tiny/none", "tiny/none @ 1e-3"}


@pytest.mark.parametrize(
    "spec, match",
    [
        ({**TINY, "sweep": {"seed": [0]}}, "unknown top-level key"),
        ({**TINY, "variants": {"x": {"norm": "batch", "lr": 0.1}}}, "tuned variant gets its lr"),
        ({**TINY, "arms": {"y": {"of": "nope"}}}, "arms.y.of"),
        ({**TINY, "base": {**TINY["base"], "seed": 3}}, "base.seed"),
        ({**TINY, "variants": {"x": {"norm": "no_such_norm"}}}, "unknown norm"),
        ({**TINY, "recalibrate": ["missing"]}, "recalibrate"),
        ({**TINY, "tune": {"lr": [0.1, 0.01]}}, "increasing"),
    ],
)
def test_parse_part_errors_name_the_problem(spec, match):
    with pytest.raises(ConfigError, match=match):
        P.parse_part("tiny", spec, P.Protocol())


def _selection_frames(rows):
    """rows: (run_id, variant, lr, status, [held-out accuracies per evaluation])."""
    runs = pd.DataFrame([(r, v, lr, s) for r, v, lr, s, _ in rows], columns=["run_id", "variant", "lr", "status"])
    hold = pd.DataFrame(
        [(r, 10 * (i + 1), M.HOLDOUT_ACC_EVAL_MODE, a) for r, _, _, _, accs in rows for i, a in enumerate(accs)],
        columns=["run_id", "step", "name", "value"],
    )
    return runs, hold


def test_select_lrs_best_mean_of_best_holdout_ties_small_divergence_excluded():
    runs, hold = _selection_frames(
        [
            ("a1", "v", 1e-3, "finished", [0.5, 0.6]),
            ("a2", "v", 1e-3, "finished", [0.5, 0.7]),  # mean best .65
            ("b1", "v", 1e-2, "finished", [0.6, 0.9]),
            ("b2", "v", 1e-2, "diverged", [0.9]),  # diverged: out
            ("c1", "v", 1e-1, "finished", [0.65]),
            ("c2", "v", 1e-1, "finished", [0.65]),  # tie .65: larger lr
        ]
    )
    sel = P.select_lrs(runs, hold)["v"]
    assert sel.lr == 1e-3 and sel.at_edge
    grid = sel.grid.set_index("lr")
    assert grid.loc[1e-3, "score"] == pytest.approx(0.65) and np.isnan(grid.loc[1e-2, "score"])
    assert grid.loc[1e-2, "diverged"] == 1
    runs, hold = _selection_frames([("a", "v", 1e-3, "diverged", [0.1])])
    assert P.select_lrs(runs, hold)["v"].lr is None
    # a failed run (an exception, not a divergence) also takes its lr out, and says so
    runs, hold = _selection_frames([("a", "v", 1e-3, "failed", [0.9]), ("b", "v", 1e-2, "finished", [0.5])])
    sel = P.select_lrs(runs, hold)["v"]
    assert sel.lr == 1e-2 and sel.grid.set_index("lr").loc[1e-3, ["diverged", "failed"]].tolist() == [0, 1]


def test_interior_choice_is_not_at_the_edge():
    runs, hold = _selection_frames(
        [("a", "v", 1e-3, "finished", [0.5]), ("b", "v", 1e-2, "finished", [0.8]), ("c", "v", 1e-1, "finished", [0.6])]
    )
    sel = P.select_lrs(runs, hold)["v"]
    assert sel.lr == 1e-2 and not sel.at_edge


def test_selection_refuses_test_metrics():
    runs, hold = _selection_frames([("a", "v", 1e-3, "finished", [0.5])])
    leaked = pd.concat([hold, hold.assign(name=M.TEST_ACC)])
    with pytest.raises(ValueError, match="reads only"):
        P.select_lrs(runs, leaked)


def test_at_best_holdout_reads_test_at_the_best_holdout_epoch_not_the_best_test():
    metrics = pd.DataFrame(
        [("r", s, e, M.HOLDOUT_ACC_EVAL_MODE, h) for s, e, h in ((10, 1, 0.5), (20, 2, 0.8), (30, 3, 0.7))]
        + [("r", s, e, M.TEST_ACC, t) for s, e, t in ((10, 1, 0.55), (20, 2, 0.6), (30, 3, 0.9))],
        columns=["run_id", "step", "epoch", "name", "value"],
    )
    out = P.at_best_holdout(pd.DataFrame({"run_id": ["r", "missing"]}), metrics)
    row = out.set_index("run_id").loc["r"]
    assert row["value"] == pytest.approx(0.6) and row["best_epoch"] == 2
    assert np.isnan(out.set_index("run_id").loc["missing", "value"])


def _select_on(tmp_path, monkeypatch, poison: bool):
    """Stage 1 of TINY with the real engine; with `poison`, the test split's labels are
    shuffled (the held-out slice comes from the training split and is untouched)."""
    import normlab.data
    import normlab.train.build

    real = normlab.data.load_dataset

    def load(name, root=None, **kw):
        data = real(name, root=root, **kw)
        if poison:
            perm = torch.from_numpy(np.random.default_rng(0).permutation(len(data.test_y)))
            data = dataclasses.replace(data, test_y=data.test_y[perm])
        return data

    # every name the run path loads data through (the engine's build imports it by name)
    monkeypatch.setattr(normlab.data, "load_dataset", load)
    monkeypatch.setattr(normlab.train.build, "load_dataset", load)
    part = P.parse_part("tiny", TINY, PROTO)
    exp = Experiment("s.select", P.selection_runs(part, PROTO))
    runner.run_experiment(exp, tmp_path, progress=False)
    with Store.open(tmp_path) as store:
        chosen = P.stored_selection(store, "s")["tiny"]
        test = store.metrics_frame("s.select", names=[M.TEST_ACC])
    return {k: (s.lr, tuple(s.grid["score"])) for k, s in chosen.items()}, test


def test_poisoned_test_split_does_not_change_the_selected_lr(tmp_path, monkeypatch):
    clean, clean_test = _select_on(tmp_path / "clean", monkeypatch, poison=False)
    poisoned, poisoned_test = _select_on(tmp_path / "poisoned", monkeypatch, poison=True)
    assert all(lr is not None for lr, _ in clean.values())  # the runs trained and were scored
    assert clean == poisoned  # same lr and same held-out scores
    # ... while the test split really was poisoned (its accuracy changed)
    assert not np.allclose(clean_test["value"].to_numpy(), poisoned_test["value"].to_numpy())
