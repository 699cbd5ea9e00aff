"""normlab._lazy and the packages that re-export lazily (normlab.train, normlab.experiments, normlab.analysis)."""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
import types

import pytest

from normlab._lazy import lazy_exports

LAZY_PACKAGES = ["normlab.train", "normlab.experiments", "normlab.analysis"]


def test_a_name_loads_its_module_on_first_use_and_is_cached(monkeypatch):
    package = types.ModuleType("fakepkg")
    monkeypatch.setitem(sys.modules, "fakepkg", package)
    package.__getattr__, package.__dir__ = lazy_exports("fakepkg", {"dumps": "json"})
    assert "dumps" not in vars(package) and "dumps" in dir(package)
    assert package.dumps is importlib.import_module("json").dumps
    assert vars(package)["dumps"] is package.dumps  # later lookups skip __getattr__
    with pytest.raises(AttributeError, match="fakepkg.*nope"):
        package.nope  # noqa: B018


@pytest.mark.parametrize("name", LAZY_PACKAGES)
def test_every_exported_name_is_its_modules_object(name):
    package = importlib.import_module(name)
    eager = set(vars(package)) - set(package._LAZY)
    assert set(package.__all__) <= eager | set(package._LAZY)
    for export, module in package._LAZY.items():
        assert getattr(package, export) is getattr(importlib.import_module(module), export), export


@pytest.mark.parametrize("name", LAZY_PACKAGES)
def test_type_checkers_see_the_names_that_run(name):
    """The `if TYPE_CHECKING:` imports name the same modules as the lazy mapping."""
    package = importlib.import_module(name)
    seen = {}
    for node in ast.walk(ast.parse(inspect.getsource(package))):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in ast.walk(node):
                if isinstance(child, ast.ImportFrom):
                    seen.update({alias.name: child.module for alias in child.names})
    assert seen == package._LAZY


def test_importing_the_analysis_layer_loads_no_scipy_or_matplotlib():
    import subprocess

    code = (
        "import sys, normlab.analysis; print(sorted(m for m in ('scipy', 'matplotlib', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
