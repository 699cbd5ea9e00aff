"""study.recalibrate: a finished BN run's eval-mode accuracy after recalibrate_bn, stored once."""

from normlab.experiments import runner
from normlab.experiments.config import expand
from normlab.experiments.store import Store
from normlab.study.common import RECAL_TEST_ACC
from normlab.study.recalibrate import recalibrate_runs


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
