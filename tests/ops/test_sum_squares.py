import pytest
import torch

from sparsekit.ops import pick_backend, sum_squares, sum_squares_reference
from sparsekit.ops import _dispatch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_reference_is_the_definition():
    x = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    assert torch.equal(sum_squares_reference(x), torch.tensor([10.0, 4.25]))
    assert sum_squares_reference(x.half()).dtype == torch.float32


@pytest.mark.triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(1, 1), (1, 64), (37, 131), (200, 64), (3, 1000)])
def test_triton_matches_reference(device, dtype, shape):
    if device == "cpu" and not _dispatch.triton_interpret():
        pytest.skip("Triton on CPU tensors needs TRITON_INTERPRET=1")
    g = torch.Generator().manual_seed(shape[0] * 1000 + shape[1])
    x = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    got = sum_squares(x, backend="triton")
    want = sum_squares_reference(x)
    assert got.dtype == torch.float32 and got.shape == (shape[1],)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.triton
def test_triton_strided_input():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(40, 30, device=device).t()  # non-contiguous [30, 40]
    torch.testing.assert_close(sum_squares(x, backend="triton"), sum_squares_reference(x), rtol=1e-5, atol=1e-5)


def test_errors_name_the_constraint(monkeypatch):
    with pytest.raises(ValueError, match="2-D"):
        sum_squares(torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        sum_squares(torch.ones(2, 2), backend="fast")
    with pytest.raises(ValueError, match="has no CUDA kernel"):
        sum_squares(torch.ones(2, 2), backend="cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="TRITON_INTERPRET=1|not installed"):
            sum_squares(torch.ones(2, 2), backend="triton")


def test_auto_falls_back_to_reference_on_plain_cpu(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert pick_backend("op", "auto", torch.ones(1)) == "reference"
    monkeypatch.setattr(_dispatch, "triton_installed", lambda: False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert pick_backend("op", "auto", torch.ones(1)) == "reference"
    assert pick_backend("op", "auto", torch.ones(1), has_cuda=True, cuda_ok=True) == "cuda"
