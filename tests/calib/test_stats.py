import pytest
import torch

from sparsekit.calib import LinearStats, accumulate


def test_accumulate_in_pieces_equals_at_once():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 17, 12, generator=g)
    whole = accumulate(LinearStats.empty(12, hessian=True), x)
    parts = LinearStats.empty(12, hessian=True)
    for piece in x.split(1):
        accumulate(parts, piece.to(torch.bfloat16).float())  # any float dtype is accepted
    flat = x.reshape(-1, 12).double()
    assert whole.count == 51
    torch.testing.assert_close(whole.sum_sq.double(), (flat ** 2).sum(0))
    torch.testing.assert_close(whole.xtx.double(), flat.T @ flat, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(whole.mean_sq(), whole.sum_sq / 51)
    assert parts.count == 51


def test_errors():
    with pytest.raises(ValueError, match="tracks? 4|track 4"):
        accumulate(LinearStats.empty(4), torch.ones(2, 5))
    with pytest.raises(ValueError, match="hessian=True"):
        LinearStats.empty(4).hessian()
