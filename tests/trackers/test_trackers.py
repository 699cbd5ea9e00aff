"""TensorBoard and MLflow trackers for real: write, then read back with each tool's own reader
(TensorBoard's EventAccumulator, MLflow's client on a local SQLite store); and
`normlab export --format tensorboard|mlflow` of a stored sweep."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from typer.testing import CliRunner

from normlab import cli
from normlab.experiments import execute
from normlab.trackers import mlflow as nl_mlflow
from normlab.trackers import tensorboard as nl_tensorboard
from normlab.trackers.mlflow import MLflowTracker
from normlab.trackers.tensorboard import TensorBoardTracker

try:  # tests/experiments/fakes.py: pytest puts tests/ on sys.path
    from experiments import fakes
except ImportError:
    from tests.experiments import fakes

CALLS = [(0, 0, {"num_params": 10.0}), (5, 1, {"train_loss": 2.0, "lr": 0.1}),
         (10, 1, {"train_loss": 1.5, "lr": 0.05, "act/fc1/mean": 0.25})]  # fmt: skip


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One local SQLite tracking store for the module: creating one costs seconds (its schema
    migrations)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _scalars(folder):
    events = EventAccumulator(str(folder))
    events.Reload()
    return events, {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_tracker_writes_scalars_at_their_steps(tmp_path):
    tracker = TensorBoardTracker(tmp_path / "tb")
    for call in CALLS:
        tracker(*call)
    tracker.close()
    _, scalars = _scalars(tmp_path / "tb")
    assert scalars["train_loss"] == [(5, 2.0), (10, 1.5)]
    assert scalars["act/fc1/mean"] == [(10, 0.25)] and scalars["num_params"] == [(0, 10.0)]


def test_tensorboard_tracker_takes_torch_summary_writer(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path / "tw")
    tracker = TensorBoardTracker(writer)
    tracker(*CALLS[1])
    tracker.close()
    writer.close()
    assert _scalars(tmp_path / "tw")[1]["lr"] == [(5, pytest.approx(0.1))]
    with pytest.raises(TypeError, match="log folder or a SummaryWriter"):
        TensorBoardTracker(3)


def test_mlflow_tracker_logs_into_the_active_run(mlflow_uri):
    uri = mlflow_uri
    mlflow.set_tracking_uri(uri)
    try:
        with pytest.raises(ValueError, match="active MLflow run or a run_id"):
            MLflowTracker()
        with mlflow.start_run() as run:
            tracker = MLflowTracker()
            for call in CALLS:
                tracker(*call)
    finally:
        mlflow.set_tracking_uri("")
    history = MlflowClient(uri).get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(5, 2.0), (10, 1.5)]


@pytest.mark.parametrize("module, extra", [(nl_tensorboard, "tensorboard"), (nl_mlflow, "mlflow")])
def test_a_missing_extra_says_how_to_install_it(module, extra, monkeypatch, tmp_path):
    monkeypatch.setattr(module, "_IMPORT_ERROR", ImportError("No module named x"))
    with pytest.raises(ImportError, match=f"pip install 'normlab\\[{extra}\\]'"):
        module.export_runs([], tmp_path, *(["uri"] if extra == "mlflow" else []))
    result = CliRunner().invoke(cli.app, ["export", "e", "--format", extra, "--out", str(tmp_path)])
    assert result.exit_code == 2 and f"normlab[{extra}]" in result.output


def test_export_a_stored_sweep_to_tensorboard_and_mlflow(tmp_path, monkeypatch, mlflow_uri):
    monkeypatch.setattr(execute, "default_run_fn", fakes.flaky_fit)
    exp_file = tmp_path / "e.yaml"
    exp_file.write_text("name: cmp\nepochs: 2\nsweep:\n  norm: [none, batch]\n  seed: [0, 2]\n")
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli.app, [*args, "--out", str(tmp_path)])

    assert invoke("sweep", str(exp_file), "-q").exit_code == 0
    metrics = _store_metrics(tmp_path)

    result = invoke("export", "cmp", "--format", "tensorboard")
    assert result.exit_code == 0, result.output
    run_dirs = sorted((tmp_path / "exports" / "tensorboard" / "cmp").iterdir())
    assert len(run_dirs) == 4
    for run_dir in run_dirs:
        events, scalars = _scalars(run_dir)
        run_id = run_dir.name.split("-")[0]
        want = metrics[next(r for r in metrics if r.startswith(run_id))]
        assert {tag: sorted(v) for tag, v in scalars.items()} == want
        content = events.PluginTagToContent("hparams")
        hparams = plugin_data_pb2.HParamsPluginData.FromString(
            next(iter(content.values()))).session_start_info.hparams  # fmt: skip
        assert hparams["norm"].string_value == run_dir.name.split("-", 1)[1]
        assert hparams["seed"].number_value in (0, 2) and "lr" in hparams

    for _attempt in (1, 2):  # the second export skips the runs exported before
        result = invoke("export", "cmp", "--format", "mlflow", "--dest", mlflow_uri)
        assert result.exit_code == 0, result.output
    assert "0 run(s)" in result.output and "4 exported before" in result.output
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("cmp").experiment_id])
    assert len(runs) == 4
    for run in runs:
        want = metrics[run.data.tags["normlab.run_id"]]
        for name, points in want.items():
            got = client.get_metric_history(run.info.run_id, name)
            assert sorted((m.step, m.value) for m in got) == points
        assert run.data.params["norm"] in ("none", "batch") and run.info.status == "FINISHED"


def _store_metrics(out):
    """run_id -> {name: sorted [(step, value)]} from the store itself."""
    from normlab.experiments.store import Store

    with Store.open(out, create=False) as store:
        frame = store.metrics_frame("cmp")
    result: dict = {}
    for run_id, step, _epoch, name, value in frame.itertuples(index=False, name=None):
        result.setdefault(run_id, {}).setdefault(name, []).append((step, pytest.approx(value)))
    return {r: {n: sorted(p, key=lambda t: t[0]) for n, p in d.items()} for r, d in result.items()}
