"""Implementation choice and dispatch: names, auto resolution, Triton errors, momentum tensors, compile."""

from __future__ import annotations

import copy
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normlab.layers import BatchNorm, functional, implementations

# As tests/kernels/conftest.py: without a GPU the Triton kernels run in Triton's interpreter,
# which must be switched on before triton is first imported.
# If something imported triton before that, its kernels are compiled for a GPU: skip below.
_IMPORTED_TOO_EARLY = "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1"
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_unknown_impl_lists_names():
    with pytest.raises(ValueError, match="expected one of auto, reference, torch, triton"):
        implementations.check_impl("fast")


def test_auto_is_torch_on_cpu():
    assert implementations.resolve_impl("auto", torch.randn(2, 3)) == "torch"
    assert implementations.resolve_impl("reference", torch.randn(2, 3)) == "reference"


def test_auto_sends_triton_only_the_inputs_where_it_measured_faster():
    # meta tensors: the shapes and layouts of the benchmark without allocating them.
    def x(*shape, dtype=torch.float32, channels_last=False):
        t = torch.empty(shape, dtype=dtype, device="meta")
        return t.to(memory_format=torch.channels_last) if channels_last else t

    assert implementations.prefers_triton(x(256, 64, 32, 32))  # 67 MB float32 NCHW
    assert implementations.prefers_triton(x(128, 64, 56, 56, dtype=torch.bfloat16))
    assert implementations.prefers_triton(x(64, 64, 4096))  # (N, C, L): the same [N, C, S] kernels
    assert not implementations.prefers_triton(x(64, 512, 7, 7))  # 6 MB: launch-bound
    assert not implementations.prefers_triton(x(8192, 512))  # (N, C)
    assert not implementations.prefers_triton(x(256, 64, 32, 32, channels_last=True))
    assert not implementations.prefers_triton(x(256, 64, 32, 32, dtype=torch.float64))
    small = implementations.TRITON_MIN_BYTES // 4 - 1  # one float32 element under the threshold
    assert not implementations.prefers_triton(x(1, 1, small))
    assert implementations.prefers_triton(x(1, 1, small + 1))
    # Never on CPU, whatever the input.
    assert implementations.resolve_impl("auto", torch.empty(256, 64, 32, 32)) == "torch"


def test_triton_on_cpu_without_interpreter_says_how_to_fix(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    bn = BatchNorm(3, impl="triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        bn(torch.randn(4, 3))


def test_triton_missing_says_pip_install(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    # A None entry in sys.modules makes `from normlab.kernels import ...` raise ImportError.
    monkeypatch.setitem(sys.modules, "normlab.kernels", None)
    with pytest.raises(RuntimeError, match=r"pip install 'normlab\[gpu\]'"):
        BatchNorm(3, impl="triton")(torch.randn(4, 3))


@pytest.mark.parametrize("impl", ["reference", "torch"])
def test_tensor_momentum_dispatch_matches_float(impl):
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    rm2, rv2 = rm.clone(), rv.clone()
    momentum = torch.tensor(0.5, dtype=torch.float64)
    y = implementations.dispatch_batch_norm(impl, x, rm, rv, None, None, True, momentum, 1e-5)
    y_ref = F.batch_norm(x, rm2, rv2, None, None, True, 0.5, 1e-5)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(rm, rm2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(rv, rv2, rtol=1e-10, atol=1e-10)


@pytest.mark.skipif(
    not functional._COMPILES_CORRECTLY,
    reason="torch < 2.13 compiles the reference op to zero gradients; it refuses (next test)",
)
def test_compile_fullgraph_with_cumulative_momentum_matches_eager():
    # torch's own BN breaks the graph here (float(num_batches_tracked)); ours keeps a tensor.
    # aot_eager: Dynamo + AOTAutograd capture the full graph without Inductor's C++ build time.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 6),
        BatchNorm(6, momentum=None, impl="reference"),
        nn.ReLU(),
        nn.Linear(6, 5),
        BatchNorm(5, momentum=None, impl="torch"),
    )
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    for _ in range(3):
        x = torch.randn(8, 4)
        y, y_ref = compiled(x), eager(x)
        torch.testing.assert_close(y, y_ref)
        y.square().sum().backward()
        y_ref.square().sum().backward()
    for (name, value), ref in zip(model.state_dict().items(), eager.state_dict().values()):
        torch.testing.assert_close(value, ref, msg=name)
    assert model[1].num_batches_tracked.item() == 3
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 2, 3)])
def test_triton_impl_matches_torch_impl(shape, momentum):
    # impl="torch" is checked against torch.nn.BatchNorm*d in test_batchnorm.py.
    pytest.importorskip("triton")
    if DEVICE == "cpu" and (_IMPORTED_TOO_EARLY or os.environ.get("TRITON_INTERPRET") != "1"):
        pytest.skip("Triton was imported before TRITON_INTERPRET=1 could be set")
    ours = BatchNorm(3, momentum=momentum, impl="triton").to(DEVICE)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1, 1)
    reference = copy.deepcopy(ours)
    reference.impl = "torch"
    g = torch.Generator().manual_seed(0)
    for mode in ("train", "train", "eval"):
        ours.train(mode == "train")
        reference.train(mode == "train")
        x = (torch.randn(shape, generator=g) * 2 + 1).to(DEVICE).requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        y, y_ref = ours(x), reference(x_ref)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        dy = torch.randn(shape, generator=g).to(DEVICE)
        y.backward(dy)
        y_ref.backward(dy)
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-5)


def test_reference_op_refuses_a_compiler_that_gets_its_gradients_wrong(monkeypatch):
    # torch 2.11 (measured on the GPU machine) traced the reference op to zero gradients:
    # there, compiling it must fail loudly instead of training silently wrong.
    monkeypatch.setattr(functional, "_COMPILES_CORRECTLY", False)
    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(4, 6), BatchNorm(6, impl="reference"))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match="needs torch >= 2.13"):
        compiled(torch.randn(8, 4))
    torch._dynamo.reset()
