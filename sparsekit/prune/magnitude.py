"""Magnitude pruning (Han et al. 2015): importance = |W|, the baseline of every pruning paper.

Layer-wise, the scores of one matrix are ranked together (comparison group 'layer'); global
magnitude ranks every targeted weight of the model against one threshold, which is an *allocation*
(how much each module loses), see `sparsekit.prune.allocation.global_threshold_counts`.
"""

from __future__ import annotations

import torch


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """|W| in fp32."""
    return weight.detach().abs().float()
