"""Lazy re-exports for a package `__init__` (PEP 562): a name loads its module on first use.

A package's `__init__` may re-export names from heavy modules (torch, matplotlib) without
making `import normlab.<package>` pay for them: only what is touched is imported.

    __getattr__, __dir__ = lazy_exports(__name__, {"fit": "normlab.train.engine"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module `__getattr__` and `__dir__` for `package` that resolve `name` to
    `getattr(import_module(exports[name]), name)` once, then cache it in the package."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)  # next lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__


__all__ = ["lazy_exports"]
