"""Crashes of real sweeps (the engine on a small synthetic dataset, through the CLI): killed
at any moment, a sweep leaves no process behind, and the rerun stores exactly the metrics of
an uninterrupted sweep, row by row (exactly-once across crashes)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
ARGS = ["dataset=synthetic", "epochs=6", "seed=0,1", "norm=none,batch"]
TIMED = ("step_ms", "epoch_seconds")  # wall-clock metrics: compared by presence, not value


def start_sweep(out: Path, executor: str, args=ARGS) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    extra = ["--workers", "2"] if executor == "process" else []
    return subprocess.Popen(
        [sys.executable, "-m", "normlab", "sweep", *args, "--out", str(out), "-q", "--executor", executor, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_sweep(out: Path, executor: str) -> None:
    proc = start_sweep(out, executor)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, their children, ...), from /proc."""
    parent_of = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent_of[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent_of.items() if pp in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status is left


def wait_gone(pids: set[int], seconds: float = 15.0) -> set[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return {p for p in pids if alive(p)}


def wait_for_checkpoint(out: Path, proc: subprocess.Popen, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not list(out.glob("runs/*/checkpoint.pt")):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no checkpoint written in time"
        time.sleep(0.05)


def stored(out: Path) -> dict[tuple[str, str, int], float | None]:
    """(run_id, name, step) -> value (None for wall-clock metrics), every metric row."""
    with sqlite3.connect(out / "normlab.db") as conn:
        rows = conn.execute("SELECT run_id, name, step, value FROM metrics").fetchall()
        statuses = {s for (s,) in conn.execute("SELECT status FROM runs")}
    assert statuses == {"finished"}
    return {(r, n, s): None if n in TIMED else v for r, n, s, v in rows}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The store of an uninterrupted sweep."""
    out = tmp_path_factory.mktemp("reference")
    finish_sweep(out, "local")
    return stored(out)


def assert_same_store(out: Path, reference: dict) -> None:
    got = stored(out)
    assert sorted(got) == sorted(reference)  # the same rows, none missing or extra
    assert got == reference  # and the same values


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_process_sweep_leaves_no_process_and_its_rerun_stores_every_row(tmp_path, reference, sig):
    proc = start_sweep(tmp_path, "process")
    wait_for_checkpoint(tmp_path, proc)
    family = descendants(proc.pid)
    assert len(family) >= 2  # the workers (and the resource tracker)
    os.kill(proc.pid, sig)
    proc.communicate(timeout=60)
    assert wait_gone(family) == set()
    if sig == signal.SIGTERM:  # a clean stop: one message, and no run left 'running'
        assert proc.returncode == 130
        with sqlite3.connect(tmp_path / "normlab.db") as conn:
            assert "running" not in {s for (s,) in conn.execute("SELECT status FROM runs")}
    finish_sweep(tmp_path, "process")
    assert_same_store(tmp_path, reference)


@pytest.mark.slow
def test_sweeps_killed_at_random_moments_store_what_an_uninterrupted_sweep_stores(tmp_path, reference):
    chooser = random.Random(20261205)
    moments = []
    for executor in ("local", "process"):
        out = tmp_path / executor
        for _ in range(6):
            proc = start_sweep(out, executor)
            moment = chooser.uniform(0.5, 7.0)  # from start-up (imports, store) to the last epochs
            moments.append((executor, round(moment, 2)))
            try:
                proc.wait(timeout=moment)
            except subprocess.TimeoutExpired:
                family = descendants(proc.pid)
                os.kill(proc.pid, signal.SIGKILL)
                proc.communicate(timeout=60)
                assert wait_gone(family) == set(), moments
            else:
                proc.communicate()
        finish_sweep(out, executor)
        assert_same_store(out, reference), moments
