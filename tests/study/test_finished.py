"""study.finished: the pieces the passes after the sweeps share."""

import torch

from normlab.data import Dataset, load_dataset
from normlab.experiments import runner
from normlab.experiments.config import Experiment, PlannedRun
from normlab.experiments.store import Store
from normlab.study import finished
from normlab.train.build import build_model_for
from normlab.train.config import RunConfig
from normlab.train.parallel import ProcessContext
from study.fakes import tiny_configs


def test_pending_lists_finished_runs_without_the_marker_and_checkpoints_load(tmp_path):
    configs = tiny_configs()
    exp = Experiment("t.eval", [PlannedRun(c, f"g/{c.norm}") for c in configs[:3]])
    runner.run_experiment(exp, tmp_path, progress=False)
    runs = {r.run_id: r.config for r in exp.runs}
    missing = Experiment("t.eval", [PlannedRun(configs[3], "g/batch")]).runs[0]  # never trained
    runs[missing.run_id] = missing.config
    with Store.open(tmp_path) as store:
        assert finished.pending(store, "t.eval", runs, "marker") == [r.run_id for r in exp.runs]
        first = exp.runs[0].run_id
        store.add_metrics(first, [(0, 0, "marker", 1.0)])
        assert first not in finished.pending(store, "t.eval", runs, "marker")
    state = finished.checkpoint(tmp_path, first)
    assert state is not None and int(state["step"]) == 2
    assert finished.checkpoint(tmp_path, missing.run_id) is None


def test_each_dataset_is_loaded_once(monkeypatch):
    import normlab.data

    calls = []
    real = normlab.data.load_dataset

    def load(name, root=None, **kw):
        calls.append(name)
        return real(name, root=root, **kw)

    monkeypatch.setattr(normlab.data, "load_dataset", load)
    configs = {str(i): c for i, c in enumerate(tiny_configs())}
    seen = list(finished.with_data(configs, list(configs)))
    assert calls == ["mnist1d"] and [rid for rid, _, _ in seen] == list(configs)
    assert all(isinstance(data, Dataset) for _, _, data in seen)


def test_build_on_cpu_is_the_engines_initial_model():
    config = tiny_configs()[1]
    data = load_dataset("mnist1d")
    model, optimizer = finished.build_on_cpu(config, data)
    engine, engine_opt, _ = build_model_for(config, data, ProcessContext(), torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), engine.state_dict().values()))
    assert len(optimizer.param_groups) == len(engine_opt.param_groups)
    x, y = next(iter(finished.train_batches(config, data, 32)))
    assert x.shape[0] == 32 and y.shape == (32,)


def test_train_batches_are_normalized_as_the_run_asks():
    """input_norm half: (x - 0.5) / 0.5 per channel, as the seed notebook normalized."""
    data = load_dataset("synthetic", shape=(3, 4, 4), train_size=40, test_size=4)
    config = RunConfig(dataset="synthetic", input_norm="half", holdout_fraction=0.0)
    loader = finished.train_batches(config, data, 8)
    idx = torch.arange(8)
    x, _ = loader.make_batch(idx)
    torch.testing.assert_close(x, (data.train_x[idx].float() - 0.5) / 0.5)
    x, _ = finished.train_batches(config.model_copy(update={"input_norm": "train_split"}), data, 8).make_batch(idx)
    torch.testing.assert_close(x, (data.train_x[idx].float() - data.mean.view(1, 3, 1, 1)) / data.std.view(1, 3, 1, 1))
