"""Bad input is refused before anything is written: bounded experiment files, duplicated
keys, values that would only fail mid-run, more than the machine has, changed data."""

from __future__ import annotations

import sqlite3
import time

import pytest
from typer.testing import CliRunner

from clitools import assert_user_error
from normlab import cli
from normlab.data import load_dataset
from normlab.data.fingerprint import fingerprint
from normlab.experiments import execute
from normlab.experiments.config import MAX_RUNS, load_experiment
from normlab.experiments.errors import ConfigError
from normlab.experiments.execute import usable_cores

from . import fakes

SMALL = ["dataset=synthetic", "hidden=[16]", "epochs=1"]


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def fake_engine(monkeypatch):
    monkeypatch.setattr(execute, "default_run_fn", fakes.fake_fit)


def refused(tmp_path, *args, texts=()):
    """`normlab sweep args` exits 2 with one message and writes nothing."""
    out = tmp_path / "out"
    assert_user_error(invoke("sweep", *args, "--out", out, "-q"), *texts)
    assert not out.exists() or not any(out.iterdir())


def test_a_billion_laughs_file_is_refused_fast(tmp_path):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nname: bomb\ndescription: *a8\n")
    assert path.stat().st_size < 2000
    start = time.perf_counter()
    refused(tmp_path, path, texts=["expands to more than 100000 values"])
    assert time.perf_counter() - start < 10


def test_deep_nesting_and_large_files_are_refused(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("description: " + "[" * 50 + "]" * 50 + "\n")
    refused(tmp_path, deep, texts=["more than 32 levels of nesting"])
    big = tmp_path / "big.yaml"
    big.write_text("description: '" + "x" * (1 << 20) + "'\n")
    refused(tmp_path, big, texts=["may hold at most 1048576"])


def test_duplicated_keys_are_errors(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: d\nepochs: 1\nlr: 0.1\nepochs: 2\n")
    refused(tmp_path, path, texts=["line 4: the key 'epochs' is given twice"])
    path.write_text("name: d\noptim.weight_decay: 0.1\noptim:\n  weight_decay: 0.2\n")
    refused(tmp_path, path, texts=["`optim.weight_decay` is given twice"])
    refused(tmp_path, "seed=0", "epochs=1", "seed=1", texts=["`seed` is given twice on the command line"])
    # overriding a key merged in from an anchor is not a duplicate
    path.write_text(
        "name: d\nsweep: &grid\n  seed: [0]\n  lr: [0.1]\ngroups:\n  g:\n    - <<: *grid\n      lr: [0.2]\n"
    )
    assert {r.config.lr for r in load_experiment(path).runs} == {0.2}


def test_a_file_that_is_not_utf8_is_one_message(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    refused(tmp_path, path, texts=["is not UTF-8 text", "save it as UTF-8"])


def test_too_many_runs_are_refused_before_they_are_built(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(
        "name: g\nsweep:\n  seed: [" + ",".join(map(str, range(200))) + "]\n"
        "  lr: [" + ",".join(f"0.{i + 1}" for i in range(60)) + "]\n"
    )
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"more than {MAX_RUNS} runs"):
        load_experiment(path)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    "args, texts",
    [
        (["lr=inf"], ["`lr`: expected a finite number, got inf"]),
        (["init_scale=.inf"], ["`init_scale`: expected a finite number"]),
        (["optim.weight_decay=inf"], ["`optim.weight_decay`: expected a finite number"]),
        ([f"seed={2**64}"], ["`seed`: expected 0 <= seed <= 9223372036854775807"]),
        (["batch_size=5000"], ["batch_size=5000", "no batches"]),
        (["holdout_fraction=0.9999"], ["holds out all 4000 training examples"]),
        (["batching=class_grouped", "classes_per_batch=20", "batch_size=40"], ["classes_per_batch=20"]),
        (["norm=group", "norm_kwargs.num_groups=3"], ["cannot be built"]),
        (["hidden=[1000000,1000000,1000000]"], ["parameters, which need at least", "choose smaller `hidden`"]),
    ],
)
def test_values_that_would_fail_mid_run_are_refused_before_any_write(tmp_path, args, texts):
    refused(
        tmp_path,
        *SMALL[:1],
        *[a for a in SMALL[1:] if a.split("=")[0] not in {x.split("=")[0] for x in args}],
        *args,
        texts=texts,
    )


def test_more_threads_than_cores_are_refused(tmp_path):
    refused(tmp_path, *SMALL, "--threads", str(usable_cores() + 1), texts=["--threads: this machine lets normlab use"])


def test_each_run_stores_its_data_fingerprint_and_changed_data_is_not_reused(tmp_path):
    out = tmp_path / "out"
    assert invoke("sweep", *SMALL, "seed=0,1", "--out", out, "-q").exit_code == 0
    expected = fingerprint(load_dataset("synthetic"))
    with sqlite3.connect(out / "normlab.db") as conn:
        assert {f for (f,) in conn.execute("SELECT data_fingerprint FROM runs")} == {expected}
        # as if the run had been trained on other data (a damaged or replaced dataset file)
        conn.execute("UPDATE runs SET data_fingerprint = 'sha256:0000' WHERE rowid = 1")
    before = (out / "normlab.db").read_bytes()
    result = invoke("sweep", *SMALL, "seed=0,1", "--out", out, "-q")
    assert_user_error(result, "was trained on other data", "restore the data")
    assert (out / "normlab.db").read_bytes() == before
