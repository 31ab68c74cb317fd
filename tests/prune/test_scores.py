"""Magnitude and Wanda scores, and Wanda's per-output-row comparison (Sun et al. 2023, §3)."""

import torch

from sparsekit.calib.stats import LinearStats, accumulate
from sparsekit.prune.methods import prune_weight
from sparsekit.prune.patterns import unstructured_mask
from sparsekit.prune.wanda import wanda_scores


def test_wanda_ranks_per_output_row_by_weight_times_input_norm():
    # row 1 is 100x row 0: a per-layer ranking would empty row 0; per-row ranking prunes half of each row.
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0],
                      [100.0, 200.0, 300.0, 400.0]])
    x = torch.tensor([[10.0, 1.0, 1.0, 1.0]])  # ||X_j||: [10, 1, 1, 1]
    stats = accumulate(LinearStats.empty(4), x)
    scores = wanda_scores(w, stats.sum_sq)
    assert torch.equal(scores, torch.tensor([[10.0, 2.0, 3.0, 4.0], [1000.0, 200.0, 300.0, 400.0]]))
    _, mask = prune_weight("wanda", w, stats, 0.5)
    expected = torch.tensor([[True, False, False, True], [True, False, False, True]])
    assert torch.equal(mask, expected)
    assert not torch.equal(mask, unstructured_mask(scores, 0.5, "layer"))  # per-layer would differ


def test_wanda_without_activation_scale_is_per_row_magnitude():
    w = torch.randn(6, 16)
    stats = accumulate(LinearStats.empty(16), torch.ones(3, 16))
    _, m_wanda = prune_weight("wanda", w, stats, 0.5)
    assert torch.equal(m_wanda, unstructured_mask(w.abs(), 0.5, "row"))


def test_magnitude_is_layer_wise_and_zeroes_exactly_the_mask():
    w = torch.tensor([[0.1, 0.2, 5.0, 6.0], [7.0, 8.0, 0.3, 0.4]])
    new, mask = prune_weight("magnitude", w, None, 0.5)
    assert torch.equal(mask, w.abs() > 1)
    assert torch.equal(new, w * mask)
    assert torch.equal(w, torch.tensor([[0.1, 0.2, 5.0, 6.0], [7.0, 8.0, 0.3, 0.4]]))  # input untouched
