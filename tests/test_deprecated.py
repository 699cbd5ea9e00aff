"""Renamed names keep working for now, warn with the new name, and give the same results.

"backend" named three things; now the BN implementation is `impl` (`bn_impl` in a run
config), the sweep executor is `executor` (`--executor`), and "backend" is left to
torch.distributed's process groups.
"""

from __future__ import annotations

import pickle
import sqlite3

import pytest
import torch
from typer.testing import CliRunner

from normlab import _deprecated, cli
from normlab._deprecated import RenamedWarning, renamed_argument
from normlab.experiments import config as experiment_config
from normlab.experiments import errors, executors, runner
from normlab.experiments.store import Store
from normlab.layers import BatchNorm, BatchNorm2d, GhostBatchNorm, SyncBatchNorm, implementations
from normlab.train.config import RunConfig

try:  # tests/experiments/fakes.py: pytest puts tests/ on sys.path (no tests/__init__.py)
    from experiments import fakes
except ImportError:
    from tests.experiments import fakes


def test_renamed_argument_new_old_or_both():
    assert renamed_argument("old", None, "new", 5, default=1, where="f") == 5
    with pytest.warns(RenamedWarning, match=r"^f\(old=\) is deprecated; use f\(new=\)$"):
        assert renamed_argument("old", 3, "new", 1, default=1, where="f") == 3
    with pytest.warns(RenamedWarning, match=r"^--old is deprecated; use --new$"):
        assert renamed_argument("--old", 3, "--new", 3, default=1, where="") == 3  # same value twice
    with pytest.raises(TypeError, match=r"f\(\) got old=3 and new=2; old is the deprecated name of new"):
        renamed_argument("old", 3, "new", 2, default=1, where="f")
    assert issubclass(RenamedWarning, DeprecationWarning)  # the usual filters apply


def test_moved_module_warns_per_name_and_refuses_unknown_ones():
    getattr_ = _deprecated.moved_module("old.place", "normlab.layers.implementations", {"OLD": "IMPLS"})
    with pytest.warns(
        RenamedWarning, match=r"old\.place\.OLD is deprecated; use normlab\.layers\.implementations\.IMPLS"
    ):
        assert getattr_("OLD") is implementations.IMPLS
    with pytest.raises(AttributeError, match="has no attribute 'other'"):
        getattr_("other")


# --- the batch norm implementation: impl= ----------------------------------------------------


@pytest.mark.parametrize("cls, args", [(BatchNorm, ()), (BatchNorm2d, ()), (GhostBatchNorm, (4,)), (SyncBatchNorm, ())])
def test_batch_norm_backend_argument_is_impl(cls, args):
    with pytest.warns(RenamedWarning, match=rf"{cls.__name__}\(backend=\) is deprecated; use {cls.__name__}\(impl=\)"):
        old = cls(3, *args, backend="reference")
    assert old.impl == "reference" and "impl='reference'" in repr(old)
    new = cls(3, *args, impl="reference")
    x = torch.randn(8, 3, 2, 2)
    torch.testing.assert_close(old(x), new(x), rtol=0, atol=0)
    with pytest.warns(RenamedWarning, match=r"BatchNorm\.backend is deprecated; use BatchNorm\.impl"):
        assert old.backend == "reference"
    with pytest.raises(TypeError, match="backend is the deprecated name of impl"):
        cls(3, *args, impl="torch", backend="reference")
    with pytest.warns(RenamedWarning), pytest.raises(ValueError, match="unknown batch norm implementation 'fast'"):
        cls(3, *args, backend="fast")


def test_a_module_pickled_with_the_old_attribute_loads():
    bn = BatchNorm2d(3, impl="reference")
    bn.__dict__["backend"] = bn.__dict__.pop("impl")  # as pickled before the rename
    loaded = pickle.loads(pickle.dumps(bn))
    assert loaded.impl == "reference" and "backend" not in vars(loaded)
    loaded(torch.randn(4, 3, 2, 2))


def test_old_layer_module_path_and_names():
    from normlab import layers
    from normlab.layers import backends

    with pytest.warns(
        RenamedWarning,
        match=r"normlab\.layers\.backends\.resolve_backend is deprecated; "
        r"use normlab\.layers\.implementations\.resolve_impl",
    ):
        assert backends.resolve_backend is implementations.resolve_impl
    with pytest.warns(RenamedWarning, match="check_impl"):
        assert backends.check_backend is implementations.check_impl
    with pytest.warns(RenamedWarning, match=r"normlab\.layers\.BACKENDS is deprecated"):
        assert layers.BACKENDS == implementations.IMPLS == ("auto", "reference", "torch", "triton")


# --- the run config key: bn_impl ---------------------------------------------------------------


def test_bn_backend_key_is_bn_impl_and_keeps_the_run_id():
    # id computed before the rename, when the field was `bn_backend`: stored runs keep it
    with pytest.warns(RenamedWarning, match="config key `bn_backend` is deprecated; use `bn_impl`"):
        old = RunConfig(bn_backend="torch", seed=3)
    assert old.bn_impl == "torch" and "bn_backend" not in old.resolved()
    assert old.run_id == RunConfig(bn_impl="torch", seed=3).run_id == "1f676f3f4845570b"
    assert RunConfig().run_id == "6dadc7f59ae8c2d4"  # the default, as before
    assert RunConfig(bn_impl="reference").run_id != RunConfig().run_id


def test_bn_backend_in_an_override_or_a_file():
    with pytest.warns(RenamedWarning, match="bn_backend"):
        assert experiment_config.parse_overrides(["bn_backend=torch,reference"]) == {"bn_impl": ["torch", "reference"]}
    with pytest.warns(RenamedWarning, match="bn_backend"):
        exp = experiment_config.expand({"bn_backend": "reference", "sweep": {"seed": [0, 1]}})
    assert [r.config.bn_impl for r in exp.runs] == ["reference", "reference"]
    assert exp.runs[0].run_id == RunConfig(bn_impl="reference", seed=0).run_id


def test_a_run_stored_with_the_old_key_reads_as_the_new_one(tmp_path):
    exp = experiment_config.load_experiment(None, ["seed=0,1"], name="mixed")
    with Store.open(tmp_path) as store:
        store.add_experiment(exp)
    with sqlite3.connect(tmp_path / "normlab.db") as db:  # as a store written before the rename
        db.execute(
            "UPDATE runs SET config_json = replace(config_json, '\"bn_impl\"', '\"bn_backend\"') WHERE run_id = ?",
            (exp.runs[0].run_id,),
        )
        stored = db.execute("SELECT config_json FROM runs WHERE run_id = ?", (exp.runs[0].run_id,)).fetchone()[0]
    assert '"bn_backend"' in stored
    with Store.open(tmp_path) as store:
        rows = store.run_rows("mixed")
        frame = store.runs_frame("mixed")
    assert [row["config"]["bn_impl"] for row in rows] == ["auto", "auto"]
    assert all("bn_backend" not in row["config"] for row in rows)
    assert "bn_backend" not in frame.columns and list(frame["bn_impl"]) == ["auto", "auto"]


# --- the sweep executor: executor= ----------------------------------------------------------


def test_run_experiment_backend_is_executor(tmp_path):
    exp = experiment_config.load_experiment(None, ["seed=0"], name="old")
    with pytest.warns(
        RenamedWarning, match=r"run_experiment\(backend=\) is deprecated; use run_experiment\(executor=\)"
    ):
        summary = runner.run_experiment(exp, tmp_path, backend="local", run_fn=fakes.fake_fit, progress=False)
    assert summary.ok
    with pytest.raises(TypeError, match="deprecated name of executor"):
        runner.run_experiment(exp, tmp_path, backend="local", executor="ray")
    with (
        pytest.warns(RenamedWarning, match="check_backend is deprecated; use check_executor"),
        pytest.raises(errors.ExecutorError, match="--executor: expected one of local, process, ray"),
    ):
        runner.check_backend("gpu", 1)


def test_run_study_backend_is_executor():
    from normlab.study import run_study

    with (
        pytest.warns(RenamedWarning, match=r"run_study\(backend=\)"),
        pytest.raises(errors.ConfigError, match="--dataset"),
    ):
        run_study(dataset="", backend="local")  # warns, then stops at the bad dataset: nothing runs


def test_old_executor_module_path_and_error_name():
    import normlab.experiments
    from normlab.experiments import backends

    with pytest.warns(RenamedWarning, match=r"normlab\.experiments\.backends\.BACKENDS is deprecated"):
        assert backends.BACKENDS == executors.EXECUTORS == ("local", "process", "ray")
    with pytest.warns(RenamedWarning, match="BackendError is deprecated; use .*ExecutorError"):
        assert errors.BackendError is errors.ExecutorError
    with pytest.warns(RenamedWarning, match=r"normlab\.experiments\.BackendError is deprecated"):
        assert normlab.experiments.BackendError is errors.ExecutorError
    assert normlab.experiments.Store is Store  # the package's lazy names still load


def test_cli_backend_option_and_key_warn_in_one_line_each(tmp_path):
    result = CliRunner().invoke(
        cli.app, ["sweep", "bn_backend=torch", "--backend", "local", "--dry-run", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [
        "normlab: warning: --backend is deprecated; use --executor",
        "normlab: warning: config key `bn_backend` is deprecated; use `bn_impl`",
    ]
    assert '"bn_impl": "torch"' in result.stdout
    assert "--backend" not in CliRunner().invoke(cli.app, ["sweep", "--help"]).output  # hidden
