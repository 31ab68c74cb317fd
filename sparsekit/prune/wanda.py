"""Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models").

Importance of weight W_ij is |W_ij| * ||X_j||_2 (eq. 1): its magnitude times the L2 norm of input
feature j over the calibration tokens. Scores are compared *per output row* (§3, "per-output"
comparison group), which the paper shows matters for LLMs: a per-layer ranking would strip whole
rows whose outputs have small scale. Use comparison group 'row' for unstructured patterns; N:M
groups are per row by construction.
"""

from __future__ import annotations

import torch


def wanda_scores(weight: torch.Tensor, sum_sq: torch.Tensor) -> torch.Tensor:
    """|W| * sqrt(sum_t x_tj^2), fp32. `sum_sq` is `[in_features]` (LinearStats.sum_sq).

    Dividing by the token count would not change any per-row or N:M ranking, so the raw sum is used.
    """
    if sum_sq.shape != (weight.shape[-1],):
        raise ValueError(f"sum_sq has shape {tuple(sum_sq.shape)} but the weight has {weight.shape[-1]} inputs")
    return weight.detach().abs().float() * sum_sq.to(weight.device, torch.float32).sqrt().unsqueeze(0)
