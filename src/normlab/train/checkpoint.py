"""Checkpoints: everything needed to continue a run on the identical trajectory.

A checkpoint may come from someone else's results folder, so reading one never runs code and
never uses damaged bytes:

    NORMLAB-CHECKPOINT\\n                       the magic line
    {"format": 2, "sha256": ..., "size": ..., "run_id": ..., "status": ..., "step": ...}\\n
    <payload: torch.save of plain types only>  (tensors, numbers, strings, lists, tuples, dicts)

The payload is read with `torch.load(weights_only=True)`, whose unpickler builds only those
plain types and refuses any other (a planted pickle cannot execute); its sha256 is checked
first, so a flipped bit is an error that names the file, never a silently different run. The
header line is plain JSON, so `read_header` tells the run and step without torch's loader.
Writes are atomic (a temporary file in the same directory, then `os.replace`): a crash
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FORMAT = 2
"""Bumped when the layout of the file or of the saved dict changes."""
MAGIC = b"NORMLAB-CHECKPOINT\n"
MAX_HEADER_BYTES = 4096
"""The header is a few hundred bytes; a longer first line is not ours (and is not read)."""


class CheckpointError(ValueError):
    """A checkpoint cannot be used for this run; the message says why and what to do."""


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA when present) generator states, as plain types
    (NumPy's key array becomes an int64 tensor) so that a weights-only load restores them."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _restart_advice(path: Path) -> str:
    return (
        f"delete it to train that run again from scratch (`rm {str(path)!r}`, then rerun the "
        "same command: the run starts over and its stored metrics are replaced)"
    )


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` (plain types and tensors only) to `path` atomically, with its sha256.

    A temporary file is removed when the write fails (e.g. the disk is full); the previous
    checkpoint then stays as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    payload = buffer.getvalue()
    header = {
        "format": CHECKPOINT_FORMAT,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "size": len(payload),
        "run_id": state.get("run_id"),
        "status": state.get("status"),
        "step": state.get("step"),
        "epoch": state.get("epoch"),
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        # a file or symlink planted at the temporary name is removed (unlink never follows a
        # link), and O_EXCL|O_NOFOLLOW refuses one planted again in between
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n")
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _split(path: Path, data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, payload) of a checkpoint file's bytes; CheckpointError when it is not one."""
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER_BYTES)
    header = None
    if data.startswith(MAGIC) and end > 0:
        try:
            header = json.loads(data[len(MAGIC) : end])
        except ValueError:
            header = None
    if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a normlab checkpoint of format {CHECKPOINT_FORMAT} "
            f"(it may be damaged or come from another program or version); {_restart_advice(path)}"
        )
    return header, data[end + 1 :]


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The plain-JSON header of a checkpoint (run_id, status, step, epoch, sha256, size),
    without reading the payload; CheckpointError when the file is not a checkpoint."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(MAGIC) + MAX_HEADER_BYTES)
    except OSError as err:
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r} ({err.strerror}); {_restart_advice(path)}"
        ) from None
    return _split(path, head)[0]


def load_checkpoint(path: str | os.PathLike, run_id: str) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` for the run `run_id`.

    Raises CheckpointError (naming the file and how to start the run over) when the file is
    not a checkpoint, its content does not match the hash recorded when it was written, it
    holds anything but plain types and tensors, or it belongs to another run.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r} ({err.strerror}); {_restart_advice(path)}"
        ) from None
    header, payload = _split(path, data)
    if len(payload) != header.get("size") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is damaged: its content does not match the sha256 recorded "
            f"when it was written (a disk or copy error, or an edit); {_restart_advice(path)}"
        )
    try:
        # weights_only: an unpickler that builds tensors and plain containers only, so a
        # planted object with a __reduce__ is refused instead of executed
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable payload gets the same advice
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds something other than tensors and plain values, which "
            f"normlab never writes, so it was not loaded ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); {_restart_advice(path)}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a normlab checkpoint of format "
            f"{CHECKPOINT_FORMAT}; {_restart_advice(path)}"
        )
    if state.get("run_id") != run_id or header.get("run_id") != run_id:
        raise CheckpointError(
            f"checkpoint {str(path)!r} belongs to run {state.get('run_id')}, not to this "
            f"config's run {run_id}; pass this run's own checkpoint path or delete the file"
        )
    return state
