"""normlab: batch normalization, measured."""

from importlib import metadata

try:  # pyproject.toml's `version` is the only place the version is written
    __version__ = metadata.version("normlab")
except metadata.PackageNotFoundError:  # sources on sys.path without an install
    __version__ = "0+unknown"

__all__ = ["__version__"]
