"""RIA's score (Zhang et al. 2024, eq. 1 and 3) computed by hand, and its selection per row / per N:M group."""

import torch

from sparsekit.calib.stats import LinearStats, accumulate
from sparsekit.prune.methods import prune_weight
from sparsekit.prune.patterns import is_nm
from sparsekit.prune.ria import ria_scores


def test_ria_score_by_hand():
    w = torch.tensor([[1.0, -2.0, 0.0],
                      [3.0, 4.0, -1.0]])
    # row sums of |W|: [3, 8]; column sums: [4, 6, 1]; ||X_j||^2 = [4, 1, 16] -> ||X_j||^0.5 = [sqrt 2, 1, 2]
    sum_sq = torch.tensor([4.0, 1.0, 16.0])
    expected = torch.tensor([
        [(1 / 3 + 1 / 4) * 2 ** 0.5, (2 / 3 + 2 / 6) * 1.0, 0.0],
        [(3 / 8 + 3 / 4) * 2 ** 0.5, (4 / 8 + 4 / 6) * 1.0, (1 / 8 + 1 / 1) * 2.0],
    ])
    torch.testing.assert_close(ria_scores(w, sum_sq), expected)
    # alpha = 1 scales by the norm itself
    torch.testing.assert_close(ria_scores(w, sum_sq, alpha=1.0)[1, 2], torch.tensor((1 / 8 + 1) * 4.0))


def test_ria_zero_row_and_column_give_zero_not_nan():
    w = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    s = ria_scores(w, torch.ones(2))
    assert torch.isfinite(s).all()
    assert torch.equal(s, torch.tensor([[0.0, 0.0], [0.0, 2.0]]))


def test_ria_relative_importance_differs_from_wanda():
    """A column whose weights are all small keeps its largest weight under RIA (relative to its column),
    where Wanda's absolute score would prune the whole column."""
    w = torch.tensor([[0.01, 1.0, 1.1, 0.9],
                      [0.02, 1.2, 0.6, 1.0]])
    stats = accumulate(LinearStats.empty(4), torch.ones(2, 4))
    _, m_wanda = prune_weight("wanda", w, stats, 0.25)
    _, m_ria = prune_weight("ria", w, stats, 0.25)
    assert not m_wanda[:, 0].any()
    # 0.02 is 2/3 of its column: RI = 0.02/2.82 + 0.02/0.03 = 0.674 beats 0.6 (0.6/2.82 + 0.6/1.7 = 0.566)
    assert m_ria[1, 0] and not m_ria[1, 2]


def test_ria_nm_and_row_counts():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 64, generator=g)
    stats = accumulate(LinearStats.empty(64), torch.randn(40, 64, generator=g))
    new, mask = prune_weight("ria", w, stats, 0.5, "2:4")
    assert is_nm(mask, 2, 4)
    assert torch.equal(new, w * mask)
    _, mask = prune_weight("ria", w, stats, 0.75)
    assert bool((mask.sum(1) == 16).all())
