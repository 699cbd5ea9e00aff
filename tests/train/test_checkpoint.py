import random

import numpy as np
import pytest
import torch

from normlab.train import CheckpointError, load_checkpoint, save_checkpoint
from normlab.train.checkpoint import rng_state, set_rng_state


def test_roundtrip_is_atomic(tmp_path):
    path = tmp_path / "sub" / "ckpt.pt"
    save_checkpoint(path, {"run_id": "abc", "weights": torch.arange(3)})
    save_checkpoint(path, {"run_id": "abc", "weights": torch.arange(4)})  # overwrite in place
    state = load_checkpoint(path, "abc")
    assert torch.equal(state["weights"], torch.arange(4))
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]


def test_wrong_run_and_garbage_are_clear_errors(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"run_id": "abc"})
    with pytest.raises(CheckpointError, match="belongs to run abc, not to this config's run xyz"):
        load_checkpoint(path, "xyz")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint.*delete it"):
        load_checkpoint(path, "abc")
    torch.save({"hello": 1}, path)
    with pytest.raises(CheckpointError, match="not a normlab checkpoint"):
        load_checkpoint(path, "abc")


def test_rng_state_roundtrip():
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(2))
    set_rng_state(state)
    second = (random.random(), np.random.rand(), torch.rand(2))
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])
