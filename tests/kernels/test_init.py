"""normlab.kernels' public surface: import without Triton, and one clear error per bad input."""

import subprocess
import sys

import pytest
import torch

import normlab.kernels as kernels


def test_imports_without_triton_and_says_how_to_install():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` raise ImportError
        "import torch, normlab.kernels as k\n"
        "assert k.triton_available() is False\n"
        "try:\n"
        "    k.batch_norm(torch.randn(4, 3), None, None, None, None, True, 0.1, 1e-5)\n"
        "except RuntimeError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'normlab[gpu]'" in out.stdout


def test_public_api():
    assert set(kernels.__all__) == {"batch_norm", "triton_available"}


needs_triton = pytest.mark.skipif(not kernels.triton_available(), reason="triton not installed")


@needs_triton
@pytest.mark.parametrize(
    "make,error,text",
    [
        (lambda d: dict(x=torch.randn(5, device=d)), ValueError, "expected 2D or higher input"),
        (lambda d: dict(x=torch.randn(4, 3, dtype=torch.float64, device=d)), TypeError, "float32, bfloat16 or float16"),
        (
            lambda d: dict(x=torch.randn(4, 3, device=d), weight=torch.ones(5, device=d)),
            ValueError,
            "weight of shape (3,)",
        ),
        (
            lambda d: dict(x=torch.randn(4, 3, device=d), running_mean=torch.zeros(3, device=d)),
            ValueError,
            "both given or both None",
        ),
        (lambda d: dict(x=torch.randn(4, 3, device=d), training=False), ValueError, "eval mode"),
        (
            lambda d: dict(x=torch.randn(1, 3, device=d)),
            ValueError,
            "Expected more than 1 value per channel when training",
        ),
        (lambda d: dict(x=torch.randn(0, 3, 4, device=d)), ValueError, "non-empty input"),
    ],
)
def test_bad_inputs_get_one_clear_error(make, error, text, device):
    kw = dict(running_mean=None, running_var=None, weight=None, bias=None, training=True)
    kw.update(make(device))
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        kernels.batch_norm(**kw)


@needs_triton
def test_cpu_tensor_without_interpreter_says_what_to_do(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kernels.batch_norm(torch.randn(4, 3), None, None, None, None, True, 0.1, 1e-5)


def test_missing_triton_error_names_the_extra(monkeypatch):
    monkeypatch.setattr(kernels, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"pip install 'normlab\[gpu\]'"):
        kernels.batch_norm(torch.randn(4, 3), None, None, None, None, True, 0.1, 1e-5)
