"""The study from an installed wheel, outside the source tree: the part files are package
data (`importlib.resources`), not files found next to the sources."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """normlab built as a wheel (`pip wheel --no-deps`) and installed (`--no-deps`) into a
    folder that, put first on PYTHONPATH, shadows the source tree; its dependencies come from
    this interpreter's environment."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((tmp / "dist").glob("normlab-*.whl"))
    target = tmp / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(target), OMP_NUM_THREADS="1")
    return target, env, tmp


def _python(code: str, env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env, cwd=cwd, check=False
    )


def test_wheel_ships_and_validates_every_part_file(installed):
    target, env, tmp = installed
    code = (
        "import normlab, normlab.study.registry as r, normlab.study.protocol as p\n"
        "print(normlab.__file__)\n"
        "for q in (False, True):\n"
        "    for part in r.PARTS:\n"
        "        spec = r.load_part(part, quick=q)\n"
        "        assert p.selection_runs(spec, r.protocol_for(q)) or spec.variants\n"
        "print('ok', len(r.PARTS))\n"
    )
    proc = _python(code, env, tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    where, ok = proc.stdout.split()[0], proc.stdout.split()[1:]
    from normlab.study.registry import PARTS

    assert Path(where).is_relative_to(target) and ok == ["ok", str(len(PARTS))]
    shipped = sorted(p.name for p in (target / "normlab" / "study" / "configs").glob("*.yaml"))
    assert shipped == sorted(p.name for p in (ROOT / "src" / "normlab" / "study" / "configs").glob("*.yaml"))


@pytest.mark.slow
def test_wheel_runs_the_quick_study_outside_the_source_tree(installed):
    _, env, tmp = installed
    out = tmp / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "normlab", "study", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out / "reports" / "study-quick" / "report.html"
    assert report.exists() and str(report) in proc.stdout
