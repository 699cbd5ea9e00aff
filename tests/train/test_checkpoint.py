import errno
import hashlib
import io
import json
import random

import numpy as np
import pytest
import torch

from normlab.train import CheckpointError, load_checkpoint, save_checkpoint
from normlab.train import checkpoint as ckpt
from normlab.train.checkpoint import MAGIC, read_header, rng_state, set_rng_state


class _Planted:
    """Unpickling this object with full pickle calls open(marker, 'w'): code from a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _framed(payload: bytes, run_id: str = "abc") -> bytes:
    """A file with a valid header around `payload` (as an attacker would build one)."""
    header = {
        "format": ckpt.CHECKPOINT_FORMAT,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "size": len(payload),
        "run_id": run_id,
        "status": "running",
        "step": 1,
        "epoch": 1,
    }
    return MAGIC + json.dumps(header).encode() + b"\n" + payload


def test_roundtrip_is_atomic(tmp_path):
    path = tmp_path / "sub" / "ckpt.pt"
    save_checkpoint(path, {"run_id": "abc", "weights": torch.arange(3)})
    save_checkpoint(path, {"run_id": "abc", "weights": torch.arange(4), "step": 7, "status": "running"})
    state = load_checkpoint(path, "abc")
    assert torch.equal(state["weights"], torch.arange(4))
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]
    assert read_header(path)["step"] == 7 and read_header(path)["run_id"] == "abc"


def test_wrong_run_and_garbage_are_clear_errors(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"run_id": "abc"})
    with pytest.raises(CheckpointError, match="belongs to run abc, not to this config's run xyz"):
        load_checkpoint(path, "xyz")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a normlab checkpoint.*rm "):
        load_checkpoint(path, "abc")
    torch.save({"hello": 1}, path)
    with pytest.raises(CheckpointError, match="not a normlab checkpoint"):
        load_checkpoint(path, "abc")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "missing.pt", "abc")


@pytest.mark.parametrize("framed", [True, False], ids=["with-valid-header", "bare-torch-save"])
def test_a_planted_pickle_does_not_execute_and_is_refused(tmp_path, framed):
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"format": ckpt.CHECKPOINT_FORMAT, "run_id": "abc", "x": _Planted(marker)}, buffer)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(_framed(buffer.getvalue()) if framed else buffer.getvalue())
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, "abc")
    assert not marker.exists()
    assert str(path) in str(err.value) and "rm " in str(err.value)
    if framed:
        assert "holds something other than tensors and plain values" in str(err.value)
    # the planted file does execute under a full unpickler: the test can fail
    torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert marker.exists()


def test_a_flipped_bit_is_refused_by_name(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"run_id": "abc", "weights": torch.randn(1000), "rng": rng_state()})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # inside the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is damaged: its content does not match the sha256") as err:
        load_checkpoint(path, "abc")
    assert repr(str(path)) in str(err.value) and "from scratch" in str(err.value)
    path.write_bytes(bytes(data[:-10]))  # truncated
    with pytest.raises(CheckpointError, match="is damaged"):
        load_checkpoint(path, "abc")


def test_a_failed_write_leaves_no_temporary_and_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"run_id": "abc", "step": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"run_id": "abc", "step": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert load_checkpoint(path, "abc")["step"] == 1


def test_a_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path):
    import os

    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    path = tmp_path / "run" / "checkpoint.pt"
    path.parent.mkdir()
    (path.parent / f".checkpoint.pt.tmp-{os.getpid()}").symlink_to(victim)
    save_checkpoint(path, {"run_id": "abc"})
    assert victim.read_text() == "keep" and load_checkpoint(path, "abc")["run_id"] == "abc"


def test_rng_state_roundtrip_through_a_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"run_id": "abc", "rng": rng_state()})
    first = (random.random(), np.random.rand(), np.random.randn(), torch.rand(2))
    set_rng_state(load_checkpoint(path, "abc")["rng"])
    second = (random.random(), np.random.rand(), np.random.randn(), torch.rand(2))
    assert first[:3] == second[:3] and torch.equal(first[3], second[3])
