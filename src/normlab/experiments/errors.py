"""User-facing errors of the experiments layer.

Each carries ONE message that says what was expected, what was got and how to fix it. The CLI
prints it on stderr and exits with code 2; anything else that escapes is a bug and keeps its
traceback.
"""

from __future__ import annotations

from normlab._deprecated import moved_module


class UserError(Exception):
    """Bad input from the user (a file, a key, an argument): the message is the whole story."""


class ConfigError(UserError, ValueError):
    """An experiment file, an override or a config value is invalid; the message names the key."""


class StoreError(UserError):
    """The results database is missing, foreign, locked, or written by a newer normlab."""


class ResourceError(UserError):
    """The machine lacks what was asked (disk space, cores, memory); the message says what."""


class ExecutorError(UserError):
    """A sweep executor cannot be used as asked (e.g. Ray is not installed)."""


# the old name of ExecutorError, with a DeprecationWarning
__getattr__ = moved_module(__name__, __name__, {"BackendError": "ExecutorError"})

__all__ = ["ConfigError", "ExecutorError", "ResourceError", "StoreError", "UserError"]
