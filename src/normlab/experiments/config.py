"""Experiment files, sweeps and `key=value` overrides, expanded into validated run configs.

An experiment file (YAML or TOML) is a base config, a grid and optional named groups:

```yaml
name: mnist1d-norm-batch        # the experiment's name in the store
description: free text          # optional
epochs: 5                       # any RunConfig key (nested keys dotted or as sections)
optim.weight_decay: 0.0
sweep:                          # a grid: every combination, in every group
  seed: [0, 1, 2]
groups:                         # optional; each group is a list of sub-sweeps
  with_vs_without:
    - norm: [none, batch]       # a list sweeps; a scalar sets
  small_batch:
    - batch_size: [2, 4, 8]
      norm: [batch, group, layer]
```

Runs = for each group entry (or once, when there are no groups): base + entry + grid, where
the grid is the product of `sweep` and the entry's list values (the entry wins on a shared
key). For list-valued keys (`hidden`, `optim.betas`) a sweep is a list of lists.

Overrides (`key=value`, as typed on the command line) replace base values; a comma list
(`batch_size=16,32`) sweeps that key across every group. Values are read as YAML scalars
(`0.01`, `true`, `[64,64]`, `null`); commas inside quotes or brackets do not split
(`data_root="/data/a,b"`), and text keys keep what was typed (`data_root=2024` is '2024').

Every mistake raises ONE `ConfigError` naming the key: unknown key (with the closest valid
one), wrong type, out-of-range value, unknown norm/model/dataset name.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from normlab.experiments.errors import ConfigError
from normlab.experiments.keys import (
    build_config,
    check_key,
    config_keys,
    current_key,
    flatten,
    is_sequence_key,
    is_text_key,
    none_allowed,
)
from normlab.experiments.paths import check_name
from normlab.train.config import RunConfig, canonical_json

# Keys of an experiment file that are not RunConfig keys.
_FILE_KEYS = ("name", "description", "sweep", "groups")
DEFAULT_GROUP = ""

# Bounds on what an experiment file or the command line may ask for (a file is input that
# may be hostile: a 1 KB YAML file with nested aliases can expand to gigabytes).
MAX_FILE_BYTES = 1 << 20  # 1 MiB of experiment file
MAX_NODES = 100_000  # values in the loaded document, every alias use counted in full
MAX_DEPTH = 32  # nesting of mappings and lists
MAX_RUNS = 10_000  # runs one experiment may plan


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error, not 'last wins'."""


def _strict_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    # the mapping's own keys only: a key merged in with `<<: *base` may be overridden
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            mark = key_node.start_mark
            raise ConfigError(
                f"line {mark.line + 1}: the key {key!r} is given twice in one mapping; "
                "keep one (a repeated key would silently override the first)"
            )
        if isinstance(key, (str, int, float, bool)):
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


def _check_size(data: Any, where: str) -> None:
    """ConfigError when the document, with every alias expanded, exceeds MAX_NODES values or
    MAX_DEPTH levels (walked with a budget, so a 'billion laughs' stops at the limit)."""
    count = 0
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_NODES or depth > MAX_DEPTH:
            what = f"more than {MAX_NODES} values" if count > MAX_NODES else f"more than {MAX_DEPTH} levels of nesting"
            raise ConfigError(
                f"{where}the document expands to {what} (YAML aliases count every "
                "time they are used); an experiment file is a config: write it out "
                "plainly, or split it into several experiments"
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for kv in value.items() for v in kv)
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)


@dataclass(frozen=True)
class PlannedRun:
    """One run of an experiment: its validated config and the group it belongs to."""

    config: RunConfig
    group: str = DEFAULT_GROUP

    @property
    def run_id(self) -> str:
        return self.config.run_id


@dataclass
class Experiment:
    """A named list of planned runs (duplicates of the same run in a group are removed).

    Args:
        name: the experiment's name in the store (`normlab ls`, `compare`, `report` use it).
        runs: the runs, in the order they execute.
        description: free text kept with the experiment.
        spec: the source (file contents + overrides), stored for provenance.

    Example:
        >>> exp = load_experiment(None, ["norm=none,batch", "seed=0,1"], name="demo")
        >>> len(exp.runs)
        4
    """

    name: str
    runs: list[PlannedRun]
    description: str = ""
    spec: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name)  # it names report and export files
        seen: set[tuple[str, str]] = set()
        unique = []
        for run in self.runs:
            if (run.group, run.run_id) not in seen:
                seen.add((run.group, run.run_id))
                unique.append(run)
        self.runs = unique

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(run.group for run in self.runs))


# --- reading values ------------------------------------------------------------------------


def _parse_scalar(text: str, key: str) -> Any:
    """A command-line value as YAML would read it; 'none' means None where a field allows it."""
    text = text.strip()
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    if isinstance(value, (bool, int, float)) and is_text_key(key):
        return text  # a name or a folder: `data_root=2024`, `norm=off` are text, not 2024 / False
    if isinstance(value, str) and value.lower() == "none" and none_allowed(key):
        return None
    return value


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets and quotes: '[64,64],"a,b"' -> ['[64,64]', '"a,b"']."""
    parts, depth, start, quote = [], 0, 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"" and text[:i].rstrip()[-1:] in ("", ",", "[", "{", "(", ":"):
            quote = ch  # a YAML quoted scalar starts here (an apostrophe inside a word does not)
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_overrides(items: Sequence[str]) -> dict[str, list[Any]]:
    """`['batch_size=16,32', 'lr=0.01']` -> {'batch_size': [16, 32], 'lr': [0.01]}.

    Every value is a list: one element sets the key, several sweep it.
    """
    parsed: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = current_key(key.strip())
        if not sep or not key:
            raise ConfigError(
                f"override {item!r}: expected key=value (e.g. `batch_size=32` or `norm=none,batch` to sweep)"
            )
        check_key(key, where="override: ")
        if key in parsed:
            raise ConfigError(
                f"override {item!r}: `{key}` is given twice on the command line; "
                f"give it once (a comma list sweeps: `{key}=a,b`)"
            )
        parts = _split_top_level(raw)
        if any(not p.strip() for p in parts) and len(parts) > 1:
            raise ConfigError(f"override {item!r}: empty value in the comma list; remove the extra comma")
        parsed[key] = [_parse_scalar(part, key) for part in parts]
    return parsed


def _sweep_values(key: str, value: Any, where: str, *, must_be_list: bool) -> list[Any]:
    """The values a sweep entry takes (a one-element list for a set value)."""
    sequence_field = is_sequence_key(key)
    is_sweep = isinstance(value, list) and (
        not sequence_field or (value and all(isinstance(v, (list, tuple)) or v is None for v in value))
    )
    if is_sweep:
        if not value:
            raise ConfigError(f"{where}`{key}`: empty list; give at least one value to sweep")
        return list(value)
    if must_be_list:
        example = "[[64, 64], [128, 128]]" if sequence_field else "[a, b]"
        raise ConfigError(
            f"{where}`{key}`: a sweep needs a list of values (e.g. `{key}: {example}`), "
            f"got {value!r}; put a single value above `sweep:` instead"
        )
    return [value]


def _grid(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


# --- experiment files ----------------------------------------------------------------------


def read_experiment_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML (.yaml/.yml) or TOML (.toml) experiment file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file {str(path)!r} does not exist; check the path")
    suffix = path.suffix.lower()
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ConfigError(
            f"experiment file {str(path)!r} is {size} bytes; an experiment file "
            f"may hold at most {MAX_FILE_BYTES} (check that it is the right file)"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"experiment file {str(path)!r} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8"
        ) from None
    try:
        if suffix in (".yaml", ".yml"):
            data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ConfigError(
                f"experiment file {str(path)!r}: expected a .yaml, .yml or .toml file, got {suffix or 'no extension'!r}"
            )
    except ConfigError as exc:
        raise ConfigError(f"experiment file {str(path)!r}: {exc}") from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError, RecursionError) as exc:
        detail = " ".join(str(exc).split()) if not isinstance(exc, RecursionError) else "nested too deeply"
        raise ConfigError(f"experiment file {str(path)!r} is not valid {suffix[1:].upper()}: {detail}") from None
    _check_size(data, f"experiment file {str(path)!r}: ")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"experiment file {str(path)!r}: expected a mapping of keys, got {type(data).__name__}")
    return data


def expand(
    spec: dict[str, Any],
    overrides: dict[str, list[Any]] | None = None,
    *,
    name: str | None = None,
    where: str = "",
) -> Experiment:
    """An experiment dict (a parsed file) + parsed overrides -> Experiment of validated runs."""
    spec = dict(spec)
    overrides = overrides or {}
    exp_name = name or spec.get("name") or "sweep"
    description = spec.get("description") or ""
    sweep = spec.get("sweep") or {}
    groups = spec.get("groups")
    base = flatten({k: v for k, v in spec.items() if k not in _FILE_KEYS})
    for key, value in base.items():
        check_key(key, where)
        if isinstance(value, list) and not is_sequence_key(key):
            raise ConfigError(
                f"{where}`{key}`: a list of values ({value!r}) sweeps only under `sweep:` or in a "
                "group; move it there, or give a single value"
            )
    if not isinstance(sweep, dict):
        raise ConfigError(f"{where}`sweep`: expected a mapping of key: [values], got {sweep!r}")
    axes = {}
    for key, value in flatten(sweep).items():
        check_key(key, f"{where}sweep: ")
        axes[key] = _sweep_values(key, value, f"{where}sweep: ", must_be_list=True)

    # Overrides: a single value replaces the base (and any sweep of that key); a list sweeps.
    for key, values in overrides.items():
        axes.pop(key, None)
        if len(values) == 1:
            base[key] = values[0]
        else:
            base.pop(key, None)
            axes[key] = values

    entries: list[tuple[str, dict[str, Any]]] = []
    if groups is None:
        entries.append((DEFAULT_GROUP, {}))
    else:
        if not isinstance(groups, dict) or not groups:
            raise ConfigError(f"{where}`groups`: expected a mapping of group name -> list of sweeps, got {groups!r}")
        for group, items in groups.items():
            items = [items] if isinstance(items, dict) else items
            if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
                raise ConfigError(
                    f"{where}groups.{group}: expected a non-empty list of mappings (e.g. "
                    f"`- norm: [none, batch]`), got {items!r}; remove the group or give it a run"
                )
            for item in items:
                entries.append((str(group), flatten(item)))

    planned = 0
    for group, entry in entries:  # count before building: a grid can be astronomically large
        label = f"{where}groups.{group}: " if group else where
        sizes = {k: len(v) for k, v in axes.items()}
        for key, value in entry.items():
            check_key(key, label)
            if key not in overrides:
                sizes[key] = len(_sweep_values(key, value, label, must_be_list=False))
        planned += math.prod(sizes.values())
        if planned > MAX_RUNS:
            raise ConfigError(
                f"{where}the experiment plans more than {MAX_RUNS} runs; sweep fewer "
                "values or split it into several experiments"
            )
    runs: list[PlannedRun] = []
    for group, entry in entries:
        label = f"{where}groups.{group}: " if group else where
        entry_axes = {}
        for key, value in entry.items():
            check_key(key, label)
            if key in overrides:  # the command line wins over the file
                continue
            entry_axes[key] = _sweep_values(key, value, label, must_be_list=False)
        combined = {**{k: v for k, v in axes.items() if k not in entry_axes}, **entry_axes}
        for point in _grid(combined):
            flat = {**base, **point}
            runs.append(PlannedRun(build_config(flat, label), group))
    source = {"spec": spec, "overrides": overrides}
    return Experiment(name=str(exp_name), runs=runs, description=str(description), spec=source)


def load_experiment(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    name: str | None = None,
) -> Experiment:
    """Read an experiment file (or none: the defaults) and apply `key=value` overrides.

    Example:
        >>> exp = load_experiment("configs/mnist1d_norm_batch.yaml", ["epochs=2"])
    """
    spec: dict[str, Any] = {}
    where = ""
    if path is not None:
        spec = read_experiment_file(path)
        where = f"{path}: "
        if name is None and not spec.get("name"):
            name = Path(path).stem
    return expand(spec, parse_overrides(overrides), name=name, where=where)


def config_json(config: RunConfig) -> str:
    """Canonical JSON of a resolved config (what the store keeps)."""
    return canonical_json(config.resolved())


__all__ = [
    "ConfigError",
    "Experiment",
    "PlannedRun",
    "RunConfig",
    "build_config",
    "check_key",
    "config_json",
    "config_keys",
    "expand",
    "flatten",
    "load_experiment",
    "parse_overrides",
    "read_experiment_file",
]
