"""normlab.bench.common: provenance, device and thread handling, the table, JSON writing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from normlab import provenance
from normlab.bench import common
from normlab.bench.common import Column, header_line, row_line
from normlab.experiments.errors import ConfigError
from normlab.provenance import MACHINE_KEYS, RUN_KEYS, cpu_name

REPO = Path(__file__).resolve().parents[2]


def test_git_commit_is_the_source_checkouts_wherever_it_runs_from(tmp_path, monkeypatch):
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    monkeypatch.chdir(tmp_path)  # not a repository: the commit must still be normlab's
    provenance.git_commit.cache_clear()  # HEAD moves while people commit to this checkout
    assert common.git_commit().removesuffix("+dirty") == head.stdout.strip()
    assert head.stdout.strip().startswith(common.git_commit(short=True).removesuffix("+dirty"))


def test_git_commit_without_git_is_unknown(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    provenance.git_commit.cache_clear()
    try:
        assert common.git_commit() == "unknown"
    finally:
        provenance.git_commit.cache_clear()


def test_provenance_names_the_machine_and_the_threads_in_use():
    with common.torch_threads(2):
        where = common.provenance(torch.device("cpu"))
    assert tuple(where) == RUN_KEYS + MACHINE_KEYS  # a run's keys, then the machine's
    assert where["torch_threads"] == 2 and where["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert where["device"] == f"cpu ({cpu_name()})"
    assert json.loads(json.dumps(where)) == where  # JSON-ready


def test_resolve_device_is_normlab_device_with_the_option_named():
    assert common.resolve_device("cpu") == torch.device("cpu")
    for bad in ("tpu", ""):
        with pytest.raises(ConfigError, match="^--device: expected cpu, cuda, cuda:N or auto"):
            common.resolve_device(bad)


def test_cuda_without_cuda_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="^--device: 'cuda' asks for a GPU.*use cpu or auto"):
        common.resolve_device("cuda")


@pytest.mark.parametrize("bad", [0, -2, True, 1.5])
def test_check_threads_refuses_non_positive_counts(bad):
    with pytest.raises(ConfigError, match="--threads: expected a positive number"):
        common.check_threads(bad)


def test_torch_threads_sets_and_restores_even_on_error():
    torch.set_num_threads(3)
    with common.torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 3
    with pytest.raises(RuntimeError), common.torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 3
    with common.torch_threads(None):
        assert torch.get_num_threads() == 3


def test_table_lines_match_the_scripts_original_format():
    """The training-loop table printed before the move (f-strings) and after (Column)."""
    from normlab.bench.training_loop import COLUMNS

    r = {
        "model": "mlp norm=batch",
        "seed_style_s": 3.1712,
        "engine_epoch_s": 1.9634,
        "engine_fit_s": 2.5,
        "speedup": 3.1712 / 1.9634,
        "speedup_whole_fit": 3.1712 / 2.5,
    }
    old_header = f"{'model':<16} {'seed-style s':>13} {'engine s':>10} {'fit s':>8} {'ratio':>7} {'ratio fit':>10}"
    old_row = (
        f"{r['model']:<16} {r['seed_style_s']:>13.3f} {r['engine_epoch_s']:>10.3f} "
        f"{r['engine_fit_s']:>8.3f} {r['speedup']:>6.1f}x {r['speedup_whole_fit']:>9.1f}x"
    )
    assert header_line(COLUMNS) == old_header
    assert row_line(COLUMNS, r) == old_row


def test_a_header_wider_than_its_column_keeps_the_columns_aligned():
    columns = [Column("shape", "shape", 8, fmt=""), Column("min ratio", "r", 6, fmt=".2f")]
    header, row = header_line(columns), row_line(columns, {"shape": "(2, 3)", "r": 1.5})
    assert len(header) == len(row) and header.index("min ratio") + len("min ratio") == len(row)
    assert row.endswith("     1.50")


def test_write_json_creates_folders_and_check_out_refuses_a_folder(tmp_path, capsys):
    path = common.write_json({"a": [1, 2.5]}, tmp_path / "deep" / "r.json")
    assert json.loads(path.read_text()) == {"a": [1, 2.5]}
    assert f"wrote {path}" in capsys.readouterr().out
    assert common.check_out(tmp_path / "x.json") == tmp_path / "x.json"
    with pytest.raises(ConfigError, match="--out: expected a JSON file path, got the folder"):
        common.check_out(tmp_path)
