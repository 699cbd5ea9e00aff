"""Property: whatever overrides and experiment file a user gives, `normlab sweep` either
stores every planned run (exit 0) or prints one message (exit 2) and leaves the results
folder byte for byte as it was. SQLite's own -wal/-shm side files of a read-only open are not
results and are left out of the comparison."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from normlab import cli
from normlab.experiments import execute
from normlab.experiments.config import load_experiment
from normlab.experiments.errors import UserError
from normlab.experiments.store import Store

from . import fakes

VALID = [
    "seed=0",
    "seed=0,1",
    "norm=none,batch",
    "lr=0.01",
    "batch_size=32",
    "epochs=2",
    "hidden=[16]",
    "optim.weight_decay=0.1",
    "holdout_fraction=0.2",
    "activation=gelu",
]
INVALID = [
    "lr=inf",
    "lr=-1",
    "nrom=batch",
    "batch_size=0",
    "batch_size=99999",
    "seed=-1",
    "holdout_fraction=1.5",
    "norm=nope",
    "epochs=1.5",
    "=3",
    "seed",
    "optim=3",
    "seed=0,,1",
    "holdout_fraction=0.99999",
    "norm=group",
    "init_scale=nan",
    "batching=class_grouped",
    "classes_per_batch=64",
    f"seed={2**64}",
]
KEYS = ["seed", "lr", "batch_size", "norm", "hidden", "optim.weight_decay", "epochs", "name", "sweep", "foo"]
TEXT_KEYS = KEYS[:6]  # free text for these; not `epochs` (the fake engine would loop for minutes)

overrides = st.lists(
    st.one_of(
        st.sampled_from(VALID),
        st.sampled_from(INVALID),
        st.builds(
            lambda k, v: f"{k}={v}",
            st.sampled_from(TEXT_KEYS),
            st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6),
        ),
    ),
    max_size=4,
)
scalars = st.one_of(
    st.integers(-2, 3),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
)
documents = st.dictionaries(
    st.sampled_from(KEYS),
    st.one_of(
        scalars,
        st.lists(scalars, max_size=3),
        st.dictionaries(st.sampled_from(KEYS), st.lists(scalars, max_size=2), max_size=2),
    ),
    max_size=4,
)
files = st.one_of(st.none(), documents.map(lambda d: yaml.safe_dump(d).encode()), st.binary(max_size=40))


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(root.rglob("*"))
        if not p.name.endswith(("-wal", "-shm"))
    }


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(items=overrides, file=files)
def test_a_sweep_stores_every_run_or_changes_nothing(tmp_path_factory, monkeypatch, items, file):
    monkeypatch.setattr(execute, "default_run_fn", fakes.fake_fit)
    root = tmp_path_factory.getbasetemp() / "property"
    out = root / "results"
    if not out.exists():  # one results folder with runs, shared by the examples
        assert (
            CliRunner()
            .invoke(cli.app, ["sweep", "dataset=synthetic", "epochs=1", "--name", "seed-run", "--out", str(out), "-q"])
            .exit_code
            == 0
        )
    args = []
    if file is not None:
        path = root / "exp.yaml"
        path.write_bytes(file)
        args.append(str(path))
    args += ["dataset=synthetic", *items]
    before = snapshot(out)
    result = CliRunner().invoke(cli.app, ["sweep", *args, "--name", "prop", "--out", str(out), "-q"])
    event(f"exit code {result.exit_code}")
    assert result.exit_code in (0, 2), (args, result.output, result.exception)
    if result.exit_code == 2:
        err = result.stderr.strip()
        assert err.startswith("normlab: error:") and len(err.splitlines()) == 1, (args, err)
        assert "Traceback" not in result.output
        assert snapshot(out) == before, args
    else:
        try:
            planned = load_experiment(
                args[0] if file is not None else None, args[1 if file is not None else 0 :], name="prop"
            )
        except UserError as err:  # pragma: no cover - the CLI accepted it, so must this
            raise AssertionError(f"{args}: {err}") from None
        with Store.open(out, create=False) as store:
            runs = store.runs_frame("prop")
        assert set(runs["run_id"]) == {r.run_id for r in planned.runs}
        assert set(runs["status"]) == {"finished"}
