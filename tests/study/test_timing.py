"""study.timing: each finished timing run timed once, side by side with its seed's others."""

from normlab.experiments import runner
from normlab.experiments.config import Experiment, PlannedRun
from normlab.experiments.store import Store
from normlab.study.timing import PAIRED_STEP_MS, time_steps
from study.fakes import tiny_configs


def test_time_steps_times_each_finished_run_once_side_by_side(tmp_path):
    configs = tiny_configs(checkpoint_every_epochs=0)
    exp = Experiment("t.eval", [PlannedRun(c, f"costs/{c.norm}, timing") for c in configs])
    runner.run_experiment(exp, tmp_path, progress=False)
    runs = {r.run_id: r.config for r in exp.runs}
    assert time_steps("t.eval", runs, tmp_path) == 4
    assert time_steps("t.eval", runs, tmp_path) == 0  # stored once
    with Store.open(tmp_path) as store:
        ms = store.metrics_frame("t.eval", names=[PAIRED_STEP_MS])
    assert sorted(ms["run_id"]) == sorted(runs) and (ms["value"] > 0).all() and (ms["step"] == 0).all()
