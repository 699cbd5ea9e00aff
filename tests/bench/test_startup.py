"""benchmarks/startup.py: one repeat end to end (the numbers are the benchmark's, not a test's)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "startup.py"


def _module():
    spec = importlib.util.spec_from_file_location("startup_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_one_repeat_writes_every_command_with_its_ratio_to_torch(tmp_path, capsys):
    out = tmp_path / "startup.json"
    assert _module().main(["--repeats", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {row["command"]: row for row in result["rows"]}
    assert set(rows) == {"python -c pass", "normlab --help", "normlab ls", "import torch"}
    assert rows["import torch"]["vs_torch"] == 1.0
    assert all(len(row["times_s"]) == 1 and row["median_s"] > 0 for row in rows.values())
    assert result["met"] == all(rows[c]["vs_torch"] < 0.25 for c in ("normlab --help", "normlab ls"))
    assert "git_commit" in result["provenance"] and "normlab ls" in capsys.readouterr().out


def test_a_failing_command_stops_the_benchmark():
    with pytest.raises(SystemExit, match="exited 3"):
        _module().time_once([sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))


def test_repeats_must_be_positive(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--repeats", "0", "--out", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(SCRIPT.parents[1] / "src")},
    )
    assert proc.returncode == 2 and "--repeats: expected a positive count, got 0" in proc.stderr
