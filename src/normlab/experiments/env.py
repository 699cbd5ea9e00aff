"""Provenance of a run: where and with what it ran (stored with every run)."""

from __future__ import annotations

import platform
import socket
import sys
from typing import Any

from normlab.provenance import git_commit  # re-exported: where the code came from


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; other names unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name(device: str) -> str:
    """A human name of the hardware a run uses, e.g. 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
    device = resolve_device(device)
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            index = int(device.partition(":")[2] or 0)
            return f"{device} ({torch.cuda.get_device_name(index)})"
    return f"{device} ({platform.processor() or platform.machine()})"


def environment(device: str = "cpu") -> dict[str, Any]:
    """python, torch, normlab versions, git commit, device, host name and torch's intra-op
    thread count of this process (on CPU the last float digits depend on it)."""
    from importlib import metadata

    import normlab

    try:  # the installed version, without paying for `import torch` in a fresh worker
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {
        "python": platform.python_version(),
        "torch": torch_version,
        "normlab": normlab.__version__,
        "git_commit": git_commit(),
        "device": device_name(device),
        "hostname": socket.gethostname(),
        # the run's thread count (set before the run starts); None when torch is not loaded
        "torch_threads": sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None,
    }


__all__ = ["device_name", "environment", "git_commit", "resolve_device"]
