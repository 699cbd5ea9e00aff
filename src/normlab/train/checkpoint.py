"""Checkpoints: everything needed to continue a run on the identical trajectory, written
atomically (a temporary file in the same directory, then `os.replace`), so a crash mid-write
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FORMAT = 1
"""Bumped when the layout of the saved dict changes."""


class CheckpointError(ValueError):
    """A checkpoint cannot be used for this run; the message says why and what to do."""


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA when present) generator states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` (plus the format version) to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, run_id: str) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` for the run `run_id`."""
    try:
        # our own file, with Python/NumPy RNG states inside: full unpickling is needed
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r} ({type(err).__name__}: {err}); delete it to "
            f"start the run from scratch"
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a normlab checkpoint of format "
            f"{CHECKPOINT_FORMAT}; delete it to start the run from scratch"
        )
    if state.get("run_id") != run_id:
        raise CheckpointError(
            f"checkpoint {str(path)!r} belongs to run {state.get('run_id')}, not to this "
            f"config's run {run_id}; pass this run's own checkpoint path or delete the file"
        )
    return state
