"""SparseGPT: parity with the OBS definition, lazy blocking is exact, reconstruction beats Wanda/magnitude."""

import pytest
import torch

from sparsekit.calib.stats import LinearStats, accumulate
from sparsekit.errors import SparsekitError
from sparsekit.prune.methods import prune_weight
from sparsekit.prune.patterns import is_nm
from sparsekit.prune.sparsegpt import sparsegpt


def _layer(rows=24, cols=32, tokens=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    # correlated inputs with uneven channel scales, as in LLM activations
    x = torch.randn(tokens, cols, generator=g) @ torch.randn(cols, cols, generator=g) * 0.3
    x = x * torch.linspace(0.2, 3.0, cols)
    w = torch.randn(rows, cols, generator=g)
    stats = accumulate(LinearStats.empty(cols, hessian=True), x)
    return w, x, stats


def _obs_reference(w, h, n, m, damp=0.01):
    """The OBS procedure written from its definition: columns left to right; before column q the
    remaining problem has Hessian H_F = H[q:, q:], and removing w_q is compensated by
    -(w_q / [H_F^-1]_00) * H_F^-1[0, :]. N:M groups are chosen, as in SparseGPT, at the first column of
    each group by w_j^2 / [H_{F_j}^-1]_00^2 ... with [H_{F_j}^-1]_00 the diagonal of the Cholesky factor."""
    h = h.double().clone()
    h += damp * torch.diagonal(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    w = w.double().clone()
    cols = w.shape[1]
    inv_tail = [torch.linalg.inv(h[q:, q:]) for q in range(cols)]
    u_diag = torch.stack([inv_tail[q][0, 0].sqrt() for q in range(cols)])  # = U_qq, U^T U = H^-1
    keep = torch.ones_like(w, dtype=torch.bool)
    for q in range(cols):
        if q % m == 0:
            eps = w[:, q:q + m] ** 2 / u_diag[q:q + m] ** 2
            drop = torch.topk(eps, m - n, dim=1, largest=False).indices
            keep[:, q:q + m].scatter_(1, drop, False)
        target = torch.where(keep[:, q], w[:, q], torch.zeros_like(w[:, q]))
        finv = inv_tail[q]
        w[:, q:] -= ((w[:, q] - target) / finv[0, 0]).unsqueeze(1) * finv[0].unsqueeze(0)
        w[:, q] = target
    return w, keep


@pytest.mark.parametrize("n, m", [(2, 4), (4, 8)])
def test_matches_the_obs_definition(n, m):
    w, _, stats = _layer()
    new, keep = sparsegpt(w, stats.xtx, pattern=f"{n}:{m}", blocksize=8)
    ref_w, ref_keep = _obs_reference(w, stats.xtx, n, m)
    assert torch.equal(keep, ref_keep)
    assert torch.allclose(new.double(), ref_w, rtol=1e-4, atol=1e-4)


def test_lazy_blocks_are_exact():
    w, _, stats = _layer()
    a, ka = sparsegpt(w, stats.xtx, pattern="2:4", blocksize=4)
    b, kb = sparsegpt(w, stats.xtx, pattern="2:4", blocksize=32)
    assert torch.equal(ka, kb)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_no_pruning_reproduces_the_weights():
    w, _, stats = _layer()
    new, keep = sparsegpt(w, stats.xtx, sparsity=0.0)
    assert bool(keep.all()) and torch.equal(new, w)


@pytest.mark.parametrize("pattern, sparsity", [("unstructured", 0.5), ("unstructured", 0.7), ("2:4", 0.5),
                                               ("4:8", 0.5)])
def test_reconstruction_error_beats_wanda_and_magnitude(pattern, sparsity):
    w, x, stats = _layer()
    ref = x @ w.T

    def err(method):
        new, keep = prune_weight(method, w, stats, sparsity, pattern)
        assert float((~keep).float().mean()) == pytest.approx(sparsity, abs=1 / w.shape[1])  # rounding: one weight per row
        assert bool((new[~keep] == 0).all())
        if pattern != "unstructured":
            assert is_nm(keep, *map(int, pattern.split(":")))
        return float(torch.linalg.norm(ref - x @ new.T))

    e_sgpt, e_wanda, e_mag = err("sparsegpt"), err("wanda"), err("magnitude")
    assert e_sgpt < e_wanda < e_mag


def test_unstructured_count_is_exact_across_blocks():
    w, _, stats = _layer(rows=7, cols=40)
    _, keep = sparsegpt(w, stats.xtx, sparsity=0.33, blocksize=16)  # blocks of 16, 16, 8 columns
    assert int((~keep).sum()) == round(0.33 * 7 * 40)


def test_dead_inputs_and_dtype():
    w, _, stats = _layer()
    h = stats.xtx.clone()
    h[3, :] = 0
    h[:, 3] = 0  # input 3 never fires
    new, keep = sparsegpt(w.half(), h, sparsity=0.5)
    assert new.dtype == torch.float16 and torch.isfinite(new.float()).all()


def test_errors():
    w, _, stats = _layer()
    with pytest.raises(SparsekitError, match="Hessian has shape"):
        sparsegpt(w, stats.xtx[:4, :4])
    with pytest.raises(SparsekitError, match="multiple of M=4"):
        sparsegpt(w, stats.xtx, pattern="2:4", blocksize=6)
