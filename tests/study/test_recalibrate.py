"""study.recalibrate: a finished BN run's eval-mode accuracy after recalibrate_bn, stored once."""

import torch

import normlab.layers
from normlab.data import BatchLoader, load_dataset
from normlab.experiments import runner
from normlab.experiments.config import expand
from normlab.experiments.store import Store
from normlab.models import build_model
from normlab.study.common import RECAL_TEST_ACC
from normlab.study.recalibrate import (
    FOLD_ACC_CHANGE,
    FOLD_LEFT,
    FOLD_LOGIT_ERROR,
    FOLD_LOGIT_SCALE,
    fold_check,
    recalibrate_runs,
)


def test_recalibrate_runs_measures_real_bn_runs_once(tmp_path):
    """One tiny real BN run: recalibrate_bn's test accuracy is stored at the run's last step."""
    exp = expand({"norm": "batch", "batch_size": 8, "epochs": 1, "max_steps": 20, "hidden": [16]}, name="recal")
    runner.run_experiment(exp, tmp_path, progress=False)
    runs = {r.run_id: r.config for r in exp.runs}
    assert recalibrate_runs("recal", runs, tmp_path) == 1
    with Store.open(tmp_path) as store:
        rows = store.metrics_frame("recal", names=[RECAL_TEST_ACC])
    assert len(rows) == 1 and rows["step"].iloc[0] == 20 and 0.0 <= rows["value"].iloc[0] <= 1.0
    assert recalibrate_runs("recal", runs, tmp_path) == 0  # already measured


def test_fold_check_on_a_trained_bn_cnn_is_exact(tmp_path):
    """One tiny real BN CNN run: the pass stores the fold check (no BN left, logits equal to
    float32 rounding, no accuracy change) with the recalibrated accuracy."""
    exp = expand({"model": "cnn", "norm": "batch", "batch_size": 8, "epochs": 1, "max_steps": 20}, name="fold")
    runner.run_experiment(exp, tmp_path, progress=False)
    assert recalibrate_runs("fold", {r.run_id: r.config for r in exp.runs}, tmp_path) == 1
    with Store.open(tmp_path) as store:
        rows = store.metrics_frame("fold").groupby("name")["value"].last()
    assert rows[FOLD_LEFT] == 0 and rows[FOLD_ACC_CHANGE] == 0 and 0 <= rows[RECAL_TEST_ACC] <= 1
    assert 0 <= rows[FOLD_LOGIT_ERROR] <= 1e-5 * rows[FOLD_LOGIT_SCALE] and rows[FOLD_LOGIT_SCALE] > 0


def test_fold_check_catches_a_fold_that_drops_a_shift(monkeypatch):
    """A fold that forgets the first conv's new bias (beta - mean * scale): the check sees it."""
    fold = normlab.layers.fold_batchnorm

    def wrong_fold(model):
        folded = fold(model)
        with torch.no_grad():
            folded.blocks[0].conv.bias.zero_()
        return folded

    torch.manual_seed(0)
    model = build_model("cnn", (1, 40), 10, norm="batch")
    with torch.no_grad():
        for m in model.modules():
            if normlab.layers.is_batchnorm(m):
                m.running_mean.uniform_(-1, 1)  # a shift to forget
    data = load_dataset("mnist1d")
    test = BatchLoader(data.test_x, data.test_y, 500, shuffle=False, drop_last=False, mean=data.mean, std=data.std)
    assert fold_check(model, test)[FOLD_LOGIT_ERROR] <= 1e-5 * fold_check(model, test)[FOLD_LOGIT_SCALE]
    monkeypatch.setattr(normlab.layers, "fold_batchnorm", wrong_fold)
    assert fold_check(model, test)[FOLD_LOGIT_ERROR] > 1e-2
