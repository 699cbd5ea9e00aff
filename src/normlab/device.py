"""One device resolution: a device name as users write it -> a `torch.device` that exists here.

Callers add the setting's name to the message (`--device: ...` on the command line,
`device: ...` for a config key or an argument), so each error says what to fix where.
"""

from __future__ import annotations

import torch

DEVICE_NAMES = "cpu, cuda, cuda:N or auto"


def resolve_device(name: str | torch.device, *, local_rank: int | None = None) -> torch.device:
    """'auto' -> CUDA when a GPU is visible, else the CPU; 'cpu', 'cuda', 'cuda:N' (or a
    `torch.device` of those) -> that device, checked to exist on this machine.

    A bare 'cuda' gets an index: `local_rank` (a data-parallel process's own GPU) when given,
    else the current CUDA device.

    Raises:
        ValueError: not one of DEVICE_NAMES, CUDA asked for on a machine without it, or a GPU
            index this machine does not have (one message: what was got and what to use).
    """
    if isinstance(name, str) and name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"expected {DEVICE_NAMES}, got {str(name)!r}")
    if device.type == "cpu":
        return device
    if not torch.cuda.is_available():
        raise ValueError(
            f"{str(name)!r} asks for a GPU, but CUDA is not available on this machine "
            f"(torch {torch.__version__}, no GPU visible); use cpu or auto"
        )
    count = torch.cuda.device_count()
    if device.index is None:
        device = torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
    if device.index >= count:
        raise ValueError(
            f"{str(name)!r}: this machine has {count} GPU(s) (cuda:0..cuda:{count - 1}); pick one of those"
        )
    return device


__all__ = ["DEVICE_NAMES", "resolve_device"]
