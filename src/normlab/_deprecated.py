"""Renamed public names: the old name keeps working for now and warns, naming the new one.

One place for every deprecation, so each old name gives the same kind of message:

    RenamedWarning: run_experiment(backend=) is deprecated; use run_experiment(executor=)

- `RenamedWarning`: a DeprecationWarning, so the usual filters apply; the CLI prints these
  as one line on stderr.
- `warn_renamed(old, new)`: the warning itself.
- `renamed_argument(...)`: a keyword argument that has a new name.
- `moved_module(...)`: a module `__getattr__` for an old module path (or old names in a
  package) that resolves each old name to its new home on first use.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class RenamedWarning(DeprecationWarning):
    """A normlab name that has a new name; the old one still works for now."""


def warn_renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """RenamedWarning "`old` is deprecated; use `new`", pointing at the caller's caller
    (stacklevel 3: the user's line that called the function that calls this)."""
    warnings.warn(f"{old} is deprecated; use {new}", RenamedWarning, stacklevel=stacklevel)


def renamed_argument(
    old_name: str, old_value: T | None, new_name: str, new_value: T, *, default: T, where: str, stacklevel: int = 4
) -> T:
    """The value of an argument that is now `new_name`: `new_value`, or `old_value` (with a
    warning) when the caller passed the old name (`where`: the function, for the message;
    "" for a command-line option).
    Passing both, with different values, is a TypeError, as Python's own "got multiple values
    for argument". stacklevel 4: the warning points at the line that called `where`."""
    if old_value is None:
        return new_value
    if new_value != default and new_value != old_value:
        raise TypeError(
            f"{where}() got {old_name}={old_value!r} and {new_name}={new_value!r}; "
            f"{old_name} is the deprecated name of {new_name}: pass {new_name} only"
        )
    old, new = (f"{where}({old_name}=)", f"{where}({new_name}=)") if where else (old_name, new_name)
    warn_renamed(old, new, stacklevel=stacklevel)
    return old_value


def moved_module(
    module: str, target: str, names: Mapping[str, str], fallback: Callable[[str], Any] | None = None
) -> Callable[[str], Any]:
    """A module `__getattr__` for `module`, whose names now live in `target`: each old name
    in `names` (old -> new) warns and returns `target`'s attribute `new`; other names go to
    `fallback` (the module's lazy exports, say), else raise AttributeError."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            if fallback is not None:
                return fallback(name)
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warn_renamed(f"{module}.{name}", f"{target}.{names[name]}")
        return getattr(importlib.import_module(target), names[name])

    return __getattr__


__all__ = ["RenamedWarning", "moved_module", "renamed_argument", "warn_renamed"]
