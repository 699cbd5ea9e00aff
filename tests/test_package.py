"""normlab as a library: one version, `normlab --version`, and a wheel with py.typed and LICENSE."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import normlab

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_the_version_is_written_once_in_pyproject():
    assert normlab.__version__ == PYPROJECT["version"] == metadata.version("normlab")
    literal = re.compile(r"""__version__\s*=\s*["']\d+\.\d+""")  # a release number
    assert not [p for p in (REPO / "src").rglob("*.py") if literal.search(p.read_text())]


def test_normlab_dash_dash_version():
    proc = subprocess.run([sys.executable, "-m", "normlab", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"normlab {normlab.__version__}\n"


def test_the_declared_python_floor_has_every_stdlib_module_we_import():
    """`requires-python` must not promise a Python that lacks a module the code imports
    unconditionally (tomllib is 3.11+)."""
    floor = tuple(int(part) for part in re.fullmatch(r">=(\d+)\.(\d+)", PYPROJECT["requires-python"]).groups())
    since = {"tomllib": (3, 11)}  # stdlib modules newer than some Python we could declare
    needs = {}
    for path in (REPO / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            )
            for name in names:
                if name.split(".")[0] in since:
                    needs[path.name] = since[name.split(".")[0]]
    assert needs, "tomllib is no longer imported: this test can go, or the floor can drop"
    assert floor >= max(needs.values()), f"requires-python {floor} but {needs} need newer"


@pytest.mark.slow
def test_the_wheel_ships_py_typed_and_the_license_and_runs_installed(tmp_path):
    # Built from a copy: an in-place build would leave build/ and *.egg-info in the checkout.
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("normlab-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        info = f"normlab-{normlab.__version__}.dist-info"
        meta = zf.read(f"{info}/METADATA").decode()
        license_text = zf.read(f"{info}/licenses/LICENSE").decode()
    assert "normlab/py.typed" in names
    assert "MIT License" in license_text and "normlab developers" in license_text
    assert f"Version: {normlab.__version__}\n" in meta
    assert "Requires-Python: >=3.11\n" in meta and "License-Expression: MIT\n" in meta
    # Installed (without dependencies: this interpreter has them) and run from elsewhere: the
    # version comes from the wheel's metadata, and outside a checkout there is no commit.
    target = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    code = (
        "import normlab, normlab.provenance as p, sys; from normlab.cli import main; "
        "print(normlab.__file__, p.environment()['git_commit']); sys.argv = ['normlab', '--version']; main()"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr
    first, version = proc.stdout.splitlines()
    where, commit = first.split()
    assert Path(where).is_relative_to(target) and commit == "None"
    assert version == f"normlab {normlab.__version__}"
