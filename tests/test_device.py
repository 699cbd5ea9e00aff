"""normlab.device.resolve_device: the one device resolution (data loader, benchmarks)."""

import pytest
import torch

from normlab.device import resolve_device


def test_names_and_devices_that_exist_here():
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("bad", ["tpu", "gpu", "gpu0", "cuda:x", "", "meta"])
def test_anything_else_is_one_message(bad):
    with pytest.raises(ValueError, match=f"^expected cpu, cuda, cuda:N or auto, got {str(bad)!r}$"):
        resolve_device(bad)


def test_cuda_on_a_machine_without_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0", torch.device("cuda", 1)):
        with pytest.raises(
            ValueError,
            match=r"asks for a GPU, but CUDA is not available on this machine "
            r"\(torch .*, no GPU visible\); use cpu or auto",
        ):
            resolve_device(name)
    assert resolve_device("auto") == torch.device("cpu")


@pytest.fixture
def two_gpus(monkeypatch):
    # only the CUDA queries resolve_device makes; no tensor is created on the device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)


def test_a_bare_cuda_is_this_processs_gpu(two_gpus):
    assert resolve_device("cuda") == torch.device("cuda", 1)  # the current device
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)  # a DDP process's own
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda:0", local_rank=1) == torch.device("cuda", 0)  # an index is kept


def test_a_gpu_index_this_machine_does_not_have(two_gpus):
    with pytest.raises(ValueError, match=r"^'cuda:2': this machine has 2 GPU\(s\) \(cuda:0..cuda:1\); pick one"):
        resolve_device("cuda:2")
    with pytest.raises(ValueError, match=r"^'cuda': this machine has 2 GPU"):
        resolve_device("cuda", local_rank=2)
