"""Parity on PyTorch's own test data: every BatchNorm1d/2d/3d sample of torch's `module_db`.

`torch.testing._internal.common_modules.module_db` is what torch's test suite runs its modules
on. Each sample (constructor arguments + input) goes through torch's class and normlab's, on
every dtype torch tests and both CPU implementations, in training and eval mode: outputs, input and
parameter gradients, buffers after the step, and state dicts both ways must agree. Each error
sample must raise torch's exception type, matching torch's message, at the same moment
(construction or forward).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.testing._internal.common_modules import ModuleErrorEnum, module_db

from normlab.layers import BatchNorm1d, BatchNorm2d, BatchNorm3d

OURS = {nn.BatchNorm1d: BatchNorm1d, nn.BatchNorm2d: BatchNorm2d, nn.BatchNorm3d: BatchNorm3d}
INFOS = [info for info in module_db if info.module_cls in OURS]
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def test_module_db_has_the_batchnorm_samples():
    # Guard against a torch that renames or drops them: the tests below would then pass empty.
    assert sorted(info.name for info in INFOS) == [f"nn.BatchNorm{d}d" for d in (1, 2, 3)]


def _cases():
    return [
        pytest.param(info, dtype, training, impl, id=f"{info.name}-{dtype}-{training}-{impl}")
        for info in INFOS
        for dtype in info.dtypes
        for training in (True, False)
        for impl in ("reference", "torch")
    ]


def _randomize(module: nn.Module, seed: int) -> None:
    """Non-trivial gamma, beta and running statistics, so parity means something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if name == "num_batches_tracked":
                tensor.fill_(3)
            elif name in ("weight", "running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=g) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=g))


@pytest.mark.parametrize("info, dtype, training, impl", _cases())
def test_samples_match_torch(info, dtype, training, impl):
    samples = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True, training=training)
    assert samples
    for index, sample in enumerate(samples):
        args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
        theirs = info.module_cls(*args, **kwargs).to(dtype).train(training)
        _randomize(theirs, index)
        ours = OURS[info.module_cls](*args, **kwargs, impl=impl).to(dtype)
        ours.train(training)
        assert list(ours.state_dict()) == list(theirs.state_dict()), sample.desc
        ours.load_state_dict(theirs.state_dict())  # torch -> normlab
        x = sample.forward_input.args[0]
        x_ours = x.detach().clone().requires_grad_()
        x_theirs = x.detach().clone().requires_grad_()
        y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
        torch.testing.assert_close(y_ours, y_theirs, **TOL[dtype], msg=sample.desc)
        dy = torch.randn_like(y_theirs)
        y_ours.backward(dy)
        y_theirs.backward(dy)
        torch.testing.assert_close(x_ours.grad, x_theirs.grad, **TOL[dtype], msg=sample.desc)
        for name, param in theirs.named_parameters():
            got = dict(ours.named_parameters())[name].grad
            torch.testing.assert_close(got, param.grad, **TOL[dtype], msg=sample.desc)
        for name, buf in theirs.named_buffers():
            got = dict(ours.named_buffers())[name]
            torch.testing.assert_close(got, buf, **TOL[dtype], msg=f"{sample.desc}: {name}")
        back = copy.deepcopy(theirs)
        _randomize(back, index + 100)
        back.load_state_dict(ours.state_dict())  # normlab -> torch
        for key, value in ours.state_dict().items():
            assert torch.equal(back.state_dict()[key], value), (sample.desc, key)


@pytest.mark.parametrize("info", INFOS, ids=lambda info: info.name)
@pytest.mark.parametrize("training", [True, False])
def test_error_samples_raise_what_torch_raises(info, training):
    errors = info.module_error_inputs_func(
        info, device="cpu", dtype=torch.float32, requires_grad=False, training=training
    )
    assert errors
    for error in errors:
        sample = error.module_error_input
        args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
        x = sample.forward_input.args[0]
        for cls in (info.module_cls, OURS[info.module_cls]):
            if error.error_on == ModuleErrorEnum.CONSTRUCTION_ERROR:
                with pytest.raises(error.error_type, match=error.error_regex):
                    cls(*args, **kwargs)
                continue
            module = cls(*args, **kwargs)  # constructs, as torch's does
            with pytest.raises(error.error_type, match=error.error_regex):
                module(x)
