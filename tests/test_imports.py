"""The import rule: the module graph is the architecture (docs/architecture.md).

- The torch-free paths stay torch-free: the CLI's help and `ls`, the store, the run config and
  metric names, the analysis layer. Each is imported in a fresh interpreter.
- No normlab module imports one from a layer above its own, and there are no import cycles.
  Imports are read from the source (ast), wherever they sit in a file: an import inside a
  function still counts. Imports under `if TYPE_CHECKING:` count for the layers (a package's
  lazy re-exports are mirrored there, see tests/test_lazy.py) but not for cycles (they never
  run).

- An import of a normlab module inside a function is allowed only where it must be lazy
  (IN_FUNCTION, each with its reason); the CLI itself has none (its one lazy import,
  `normlab.cli._command`, goes through importlib).

`python tests/test_imports.py` prints the graph between layers.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first: a module may import its own layer and the ones before it, never one after.
LAYERS = [
    ["root"],  # normlab/*.py: version, provenance, lazy re-exports, device resolution
    ["kernels"],
    ["layers"],
    ["models", "data"],
    ["train"],
    ["experiments"],
    ["analysis", "bench", "trackers"],  # each reads the store or runs the engine
    ["study"],
    ["commands"],  # what each CLI command does
    ["cli", "__main__"],
]
RANK = {layer: rank for rank, names in enumerate(LAYERS) for layer in names}
# modules that sit in another layer than their folder says
LAYER_OF: dict[str, str] = {}

TORCH_FREE = [
    "normlab",
    "normlab.provenance",
    "normlab.cli",
    "normlab.train",  # RunConfig and the metric names
    "normlab.data",  # its names load their modules on first use
    "normlab.train.schedule",  # lr_factor: a report recomputes a stored run's schedule
    "normlab.experiments",
    "normlab.experiments.store",
    "normlab.experiments.config",
    "normlab.analysis",
    "normlab.analysis.report",
    "normlab.study.report",  # `normlab report`
    "normlab.commands.ls",
    "normlab.commands.report",
]


def modules() -> dict[str, Path]:
    """'normlab.train.engine' -> its file, for every module under src/normlab."""
    found = {}
    for path in sorted((SRC / "normlab").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


# module -> {imported module: why it is imported inside a function, not at the top}
_WORKERS_AND_PARENT = (
    "the runner, and so a sweep's parent process and a worker that runs another "
    "run_fn, loads no torch: only the process that trains imports the engine"
)
_TRITON = "Triton is an optional extra, imported only when its kernels run (after TRITON_INTERPRET is set)"
_STUDY = (
    "`normlab report` rebuilds a stored study's report without torch, and `normlab.study` "
    "imports run_study: the passes after the sweeps load torch when they run"
)
IN_FUNCTION: dict[str, dict[str, str]] = {
    "normlab.kernels": {"normlab.kernels.op": _TRITON},
    "normlab.layers.implementations": {"normlab.kernels": _TRITON},
    "normlab.experiments.execute": {
        m: _WORKERS_AND_PARENT for m in ("normlab.train", "normlab.train.checkpoint", "normlab.train.distributed")
    },
    "normlab.experiments.runner": {"normlab.train.engine": _WORKERS_AND_PARENT},
    "normlab.experiments.preflight": {
        m: _WORKERS_AND_PARENT
        for m in ("normlab.data", "normlab.data.fingerprint", "normlab.train.build", "normlab.train.engine")
    },
    "normlab.experiments.keys": {
        m: "the run config is torch-free; the registries it checks names "
        "against load torch, so only when a config is built"
        for m in ("normlab.layers", "normlab.models", "normlab.data")
    },
    "normlab.bench.kernels.run": {
        m: _TRITON
        for m in (
            "normlab.bench.kernels.tuning",
            "normlab.bench.kernels.matrix",
            "normlab.bench.kernels.timing",
            "normlab.bench.kernels.resources",
        )
    },
    "normlab.commands.export": {
        m: "each tracker is an optional extra, and MLflow takes seconds to import"
        for m in ("normlab.trackers.tensorboard", "normlab.trackers.mlflow")
    },
    "normlab.study.finished": {
        m: _STUDY for m in ("normlab.data", "normlab.train.build", "normlab.train.parallel", "normlab.train.checkpoint")
    },
    "normlab.study.recalibrate": {m: _STUDY for m in ("normlab.data", "normlab.layers", "normlab.train.evaluate")},
    "normlab.study.run": {"normlab.data": _STUDY},
    "normlab.study.part9_notebook": {
        m: _STUDY for m in ("normlab.models", "normlab.train.optim", "normlab.data.cifar", "normlab.data.storage")
    },
    "normlab.study.mechanisms": {
        m: _STUDY for m in ("normlab.train.engine", "normlab.train.ics_probe", "normlab.train.bn_anatomy")
    },
}


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported(path: Path, known: set[str], type_checking: bool = False) -> set[str]:
    """The normlab modules a file imports when it runs, and with `type_checking` also those
    it imports for type checkers (`from pkg import submodule` -> the submodule;
    `from pkg import name` -> pkg)."""
    out: set[str] = set()
    stack: list[ast.AST] = [ast.parse(path.read_text(), str(path))]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child) and not type_checking:
                continue
            if isinstance(child, ast.Import):
                out.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    full = f"{child.module}.{alias.name}"
                    out.add(full if full in known else child.module)
            stack.append(child)
    return {name for name in out if name in known}


def in_function(path: Path, known: set[str]) -> set[str]:
    """The normlab modules a file imports inside a function (at any depth), as `imported`
    names them; imports under `if TYPE_CHECKING:` never run and do not count."""
    out: set[str] = set()

    def visit(node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            nested = inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if nested and isinstance(child, ast.Import):
                out.update(alias.name for alias in child.names)
            elif nested and isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    full = f"{child.module}.{alias.name}"
                    out.add(full if full in known else child.module)
            visit(child, nested)

    visit(ast.parse(path.read_text(), str(path)), False)
    return {name for name in out if name in known}


def graph(type_checking: bool = False) -> dict[str, set[str]]:
    found = modules()
    return {name: imported(path, set(found), type_checking) - {name} for name, path in found.items()}


def layer(module: str) -> str:
    if module in LAYER_OF:
        return LAYER_OF[module]
    folder = module.split(".")[1] if "." in module else "root"
    return folder if folder in RANK else "root"  # normlab.provenance, normlab._lazy


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    assert {layer(m) for m in modules()} <= set(RANK)


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [
        f"{a} ({layer(a)}) imports {b} ({layer(b)})"
        for a, targets in graph(type_checking=True).items()
        for b in sorted(targets)
        if RANK[layer(b)] > RANK[layer(a)]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_normlab_imports_sit_at_the_top_but_where_they_must_be_lazy():
    found = modules()
    lazy = {name: targets for name, path in found.items() if (targets := in_function(path, set(found)))}
    unexpected = [
        f"{m} imports {t} inside a function: move it to the top of the file, or add it to "
        "IN_FUNCTION with the reason it must be lazy"
        for m, targets in sorted(lazy.items())
        for t in sorted(targets - set(IN_FUNCTION.get(m, {})))
    ]
    stale = [
        f"IN_FUNCTION lists {m} -> {t}, which is no longer imported inside a function there"
        for m, allowed in sorted(IN_FUNCTION.items())
        for t in sorted(set(allowed) - lazy.get(m, set()))
    ]
    assert not unexpected + stale, "\n".join(unexpected + stale)
    assert "normlab.cli" not in IN_FUNCTION


def test_in_function_sees_nested_imports_and_skips_type_checking(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from normlab.train import metrics\n"
        "if TYPE_CHECKING:\n    from normlab.experiments.runner import Writer\n"
        "class C:\n    def f(self):\n        if True:\n            import normlab.train.engine\n"
        "g = lambda: __import__('x')\n"
    )
    known = {"normlab.train", "normlab.train.metrics", "normlab.train.engine", "normlab.experiments.runner"}
    assert in_function(source, known) == {"normlab.train.engine"}


def test_the_checks_see_a_cycle_and_an_upward_import():
    # the checks themselves, on a made-up graph: a cycle, and layers imports train
    edges = {"normlab.a": {"normlab.b"}, "normlab.b": {"normlab.a"}, "normlab.c": set()}
    assert cycles(edges) == [["normlab.a", "normlab.b"]]
    assert RANK[layer("normlab.train.engine")] > RANK[layer("normlab.layers.batchnorm")]
    assert layer("normlab.study.run") == "study" and RANK["study"] > RANK["analysis"]


def test_imports_under_type_checking_and_in_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from normlab.train import metrics\n"
        "from normlab.train import RunConfig\n"
        "if TYPE_CHECKING:\n    from normlab.experiments.runner import Writer\n"
        "def f():\n    import normlab.train.engine\n"
    )
    known = {"normlab.train", "normlab.train.metrics", "normlab.train.engine", "normlab.experiments.runner"}
    assert imported(source, known) == {"normlab.train.metrics", "normlab.train", "normlab.train.engine"}
    assert imported(source, known, type_checking=True) == known


def _loads_torch(code: str, cwd: Path) -> list[str]:
    """The heavy modules in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint('loaded:', *(m for m in ('torch', 'triton') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()[-1].split()[1:]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_importing_does_not_load_torch(module, tmp_path):
    assert _loads_torch(f"import {module}", tmp_path) == []


def test_cli_help_and_ls_do_not_load_torch(tmp_path):
    # (argv, exit code): help pages with their epilogs, --version, and `ls` on an empty store
    code = (
        "from normlab.cli import app\n"
        "from normlab.experiments.store import Store\n"
        "Store.open('runs').close()\n"
        "for argv, expected in ((['--help'], 0), (['run', '--help'], 0), (['sweep', '--help'], 0),\n"
        "                       (['--version'], 0), (['ls'], 0), (['ls', '--json'], 0)):\n"
        "    try:\n"
        "        app(argv, prog_name='normlab')\n"
        "    except SystemExit as exc:\n"
        "        assert (exc.code or 0) == expected, (argv, exc.code)\n"
    )
    assert _loads_torch(code, tmp_path) == []


if __name__ == "__main__":
    between: dict[str, set[str]] = defaultdict(set)
    for a, targets in graph(type_checking=True).items():
        for b in targets:
            if layer(a) != layer(b):
                between[layer(a)].add(layer(b))
    for name in sorted(between, key=lambda n: (RANK[n], n)):
        print(f"{name:12} -> {', '.join(sorted(between[name], key=lambda n: (RANK[n], n)))}")
