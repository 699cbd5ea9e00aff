"""The study: every part's file validates, --quick shrinks it, run_study runs all parts and
writes the report (with a synthetic engine: no training here), reruns train nothing twice."""

from types import SimpleNamespace

import pytest

from normlab.experiments import runner, study
from normlab.experiments.errors import ConfigError
from normlab.train import metrics as M


def test_every_part_file_validates_and_quick_is_smaller():
    for part in study.PARTS:
        full = study.part_experiment(part)
        quick = study.part_experiment(part, quick=True)
        assert full.name == f"study.{part.key}" and quick.name == f"study-quick.{part.key}"
        assert 0 < len(quick.runs) < len(full.runs), part.key
        assert all(r.config.dataset == "mnist1d" for r in full.runs)
        seeds = {r.config.seed for r in quick.runs}
        assert 1 <= len(seeds) <= 2
    # The quick study's runs are different configs, so they never mix into the full study.
    full_ids = {r.run_id for p in study.PARTS for r in study.part_experiment(p).runs}
    quick_ids = {r.run_id for p in study.PARTS for r in study.part_experiment(p, quick=True).runs}
    assert not full_ids & quick_ids


def test_parts_measure_what_the_issue_asks():
    runs = {p.key: study.part_experiment(p).runs for p in study.PARTS}
    assert {r.config.norm for r in runs["bn"]} == {"none", "batch"}
    assert {r.config.batch_size for r in runs["bn"]} == {64}
    sizes = {r.config.batch_size for r in runs["batch_size"]}
    assert {2, 4, 32, 64, 128} <= sizes
    assert {"group", "layer", "batch_renorm", "ghost_batch"} <= {r.config.norm for r in runs["batch_size"]}
    assert any(r.config.schedule.name == "exponential" for r in runs["lr_init"])
    assert any(r.config.init_scale != 1.0 for r in runs["lr_init"])
    ioffe = runs["ioffe2015"][0].config
    assert ioffe.hidden == [100, 100, 100] and ioffe.activation == "sigmoid" and ioffe.probes.activations
    assert {r.config.batching for r in runs["noniid"]} == {"random", "class_grouped"}
    assert all(len({r.config.seed for r in rs}) >= 3 for rs in runs.values())


def test_study_names():
    assert study.study_name() == "study"
    assert study.study_name(quick=True) == "study-quick"
    assert study.study_name("cifar10") == "study-cifar10"
    exp = study.part_experiment(study.PARTS[0], dataset="synthetic")
    assert exp.name == "study-synthetic.bn" and exp.runs[0].config.dataset == "synthetic"


def test_unknown_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="dataset"):
        study.part_experiment(study.PARTS[0], dataset="no_such_data")


def _fake_fit(config, *, on_metrics, checkpoint_path=None, **_):
    """A stand-in engine: BN is 10 points better, one evaluation per epoch."""
    acc = 0.7 if config.norm != "none" else 0.6
    acc += 0.001 * config.seed
    step = 0
    for epoch in range(1, config.epochs + 1):
        step += 10
        on_metrics(step, epoch, {M.TRAIN_LOSS: 1.0 / epoch, M.LR: config.lr, M.STEP_MS: 1.0,
                                 M.TEST_ACC: acc, M.TEST_LOSS: 1.0, M.EPOCH_TRAIN_LOSS: 0.9})
    return SimpleNamespace(status="finished", final={M.TEST_ACC: acc}, steps=step, seconds=0.0)


def test_run_study_runs_every_part_and_writes_the_report(tmp_path, monkeypatch):
    calls = []
    real = runner.run_experiment

    def fake_run_experiment(experiment, out_dir, **kw):
        calls.append(experiment.name)
        return real(experiment, out_dir, run_fn=_fake_fit, progress=False, **kw)

    monkeypatch.setattr(runner, "run_experiment", fake_run_experiment)
    report_dir = study.run_study(quick=True, out=tmp_path)
    assert calls == [f"study-quick.{p.key}" for p in study.PARTS]
    assert report_dir == tmp_path / "reports" / "study-quick"
    md = (report_dir / "report.md").read_text()
    assert "BN makes the network reach a higher test accuracy." in md
    assert (report_dir / "report.html").stat().st_size > 10_000
    # A second run finds every run in the store: nothing trains twice.
    trained = []

    def counting_fit(config, **kw):
        trained.append(config.run_id)
        return _fake_fit(config, **kw)

    monkeypatch.setattr(runner, "run_experiment",
                        lambda e, o, **kw: real(e, o, run_fn=counting_fit, progress=False, **kw))
    study.run_study(quick=True, out=tmp_path)
    assert trained == []


def test_recalibrate_runs_skips_runs_without_checkpoint(tmp_path):
    exp = study.part_experiment(study.PARTS[3], quick=True)
    runner.run_experiment(exp, tmp_path, run_fn=_fake_fit, progress=False)
    assert study.recalibrate_runs(exp, tmp_path) == 0


def test_recalibrate_runs_measures_real_bn_runs_once(tmp_path):
    """One tiny real BN run: recalibrate_bn's test accuracy is stored at the run's last step."""
    from normlab.experiments.config import expand
    from normlab.experiments.store import Store

    exp = expand({"norm": "batch", "batch_size": 8, "epochs": 1, "max_steps": 20, "hidden": [16]},
                 name="recal")
    runner.run_experiment(exp, tmp_path, progress=False)
    assert study.recalibrate_runs(exp, tmp_path) == 1
    with Store.open(tmp_path) as store:
        rows = store.metrics_frame("recal", names=[study.RECAL_METRIC])
    assert len(rows) == 1 and rows["step"].iloc[0] == 20 and 0.0 <= rows["value"].iloc[0] <= 1.0
    assert study.recalibrate_runs(exp, tmp_path) == 0  # already measured


def test_missing_data_is_one_clear_error(tmp_path, monkeypatch):
    import normlab.data

    def missing(name, root=None, **kw):
        raise ValueError(f"{name}: put cifar-10-binary.tar.gz in {tmp_path}")  # as DatasetError does

    monkeypatch.setattr(normlab.data, "load_dataset", missing)
    calls = []
    monkeypatch.setattr(runner, "run_experiment", lambda *a, **k: calls.append(a))
    with pytest.raises(ConfigError, match="--dataset cifar10: "):
        study.run_study(dataset="cifar10", quick=True, out=tmp_path / "out")
    assert calls == []  # nothing ran
