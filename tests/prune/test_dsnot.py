"""DSnoT (Zhang et al. 2024): swaps never increase the objective sum_i |e_i|, keep counts and N:M."""

import pytest
import torch

from sparsekit.calib.stats import LinearStats, accumulate
from sparsekit.prune.dsnot import dsnot_refine, expected_error
from sparsekit.prune.methods import method_scores, prune_weight
from sparsekit.prune.patterns import is_nm, select_mask


def _case(seed, out=32, k=64, tokens=200):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, k, generator=g)
    # inputs with a channel-wise offset, so that E[x_j] != 0 and the expected error is not trivially zero
    x = torch.randn(tokens, k, generator=g) * torch.rand(k, generator=g) * 2 + torch.randn(k, generator=g)
    return w, accumulate(LinearStats.empty(k), x), x


@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "4:8"])
@pytest.mark.parametrize("seed", range(4))
def test_objective_never_increases_and_counts_hold(pattern, seed):
    w, stats, _ = _case(seed)
    scores = method_scores("wanda", w, stats)
    mask = select_mask(scores, 0.5, pattern, "row")
    refined = dsnot_refine(w, mask, scores, stats.mean(), stats.var(), pattern)
    before = expected_error(w, mask, stats.mean()).abs()
    after = expected_error(w, refined, stats.mean()).abs()
    assert bool((after <= before + 1e-5).all())  # per row, hence the sum
    assert float(after.sum()) < 0.9 * float(before.sum())  # and it does something on these inputs
    assert torch.equal(refined.sum(1), mask.sum(1))
    if pattern != "unstructured":
        n, m = map(int, pattern.split(":"))
        assert is_nm(refined, n, m)


def test_zero_mean_inputs_leave_the_mask_alone():
    w, _, _ = _case(0)
    stats = accumulate(LinearStats.empty(64), torch.cat([torch.ones(5, 64), -torch.ones(5, 64)]))
    scores = method_scores("wanda", w, stats)
    mask = select_mask(scores, 0.5, "2:4")
    assert torch.equal(dsnot_refine(w, mask, scores, stats.mean(), stats.var(), "2:4"), mask)


def test_expected_error_by_hand():
    w = torch.tensor([[1.0, 2.0, -3.0]])
    mask = torch.tensor([[True, False, False]])
    mean = torch.tensor([1.0, 0.5, 1.0])
    assert float(expected_error(w, mask, mean)) == pytest.approx(2.0 * 0.5 - 3.0)


def test_prune_weight_with_dsnot_and_refusal_for_sparsegpt():
    w, stats, x = _case(1)
    new, mask = prune_weight("ria", w, stats, 0.5, "2:4", dsnot=(50, 1.0))
    assert is_nm(mask, 2, 4) and torch.equal(new, w * mask)
    stats_h = LinearStats.empty(64, hessian=True)
    accumulate(stats_h, x)
    with pytest.raises(ValueError, match="dsnot refines"):
        prune_weight("sparsegpt", w, stats_h, 0.5, "2:4", dsnot=(50, 1.0))
