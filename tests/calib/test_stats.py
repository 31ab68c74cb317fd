import pytest
import torch

from sparsekit.calib import LinearStats, accumulate


def test_accumulate_in_pieces_equals_at_once():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 17, 12, generator=g)
    whole = accumulate(LinearStats.empty(12, hessian=True), x)
    parts = LinearStats.empty(12, hessian=True)
    for piece in x.split(1):
        accumulate(parts, piece)
    flat = x.reshape(-1, 12).double()
    assert whole.count == parts.count == 51
    torch.testing.assert_close(whole.sum_sq.double(), (flat ** 2).sum(0))
    torch.testing.assert_close(whole.xtx.double(), flat.T @ flat, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(whole.mean_sq(), whole.sum_sq / 51)
    # the pieces add up to the same statistics (fp32 summation order aside)
    torch.testing.assert_close(parts.sum_sq, whole.sum_sq)
    torch.testing.assert_close(parts.xtx, whole.xtx)


def test_accumulate_accepts_any_float_dtype():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(17, 12, generator=g).to(torch.bfloat16)
    got = accumulate(LinearStats.empty(12, hessian=True), x)
    flat = x.double()  # bf16 -> fp64 is exact: the reference sees the same values
    assert got.sum_sq.dtype == got.xtx.dtype == torch.float32
    torch.testing.assert_close(got.sum_sq.double(), (flat ** 2).sum(0))
    torch.testing.assert_close(got.xtx.double(), flat.T @ flat, rtol=1e-5, atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="tracks? 4|track 4"):
        accumulate(LinearStats.empty(4), torch.ones(2, 5))
    with pytest.raises(ValueError, match="hessian=True"):
        LinearStats.empty(4).hessian()
