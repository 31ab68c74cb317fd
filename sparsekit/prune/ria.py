"""RIA: Relative Importance and Activations (Zhang et al., ICLR 2024, "Plug-and-Play: An Efficient
Post-training Pruning Method for Large Language Models").

Relative importance (eq. 1) weighs a weight against the other weights of its output row *and* of its
input column, so that a channel whose weights are all small is not stripped wholesale (the failure
mode of per-layer magnitude), while a row with large weights does not hide its least useful ones:

    RI_ij = |W_ij| / sum_k |W_ik|  +  |W_ij| / sum_k |W_kj|

RIA (eq. 3) multiplies it by the input channel's activation norm to a power a (the paper's a = 0.5,
chosen on LLaMA; a = 1 with the RI term replaced by |W| would be Wanda):

    RIA_ij = RI_ij * ||X_j||_2 ** a

Scores are ranked per output row for unstructured sparsity (as the paper's code does) and inside each
group of M inputs for N:M.
"""

from __future__ import annotations

import torch

#: the paper's exponent of the activation norm (§3.2, Table 6)
ALPHA = 0.5


def ria_scores(weight: torch.Tensor, sum_sq: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """RIA_ij for a `[out, in]` weight and `sum_sq = sum_t x_tj^2` (`[in]`), fp32.

    A row or column whose weights are all zero contributes 0 (not NaN) to RI.
    """
    if sum_sq.shape != (weight.shape[-1],):
        raise ValueError(f"sum_sq has shape {tuple(sum_sq.shape)} but the weight has {weight.shape[-1]} inputs")
    a = weight.detach().abs().float()
    row = a.sum(dim=1, keepdim=True)
    col = a.sum(dim=0, keepdim=True)
    ri = a / torch.where(row > 0, row, 1.0) + a / torch.where(col > 0, col, 1.0)
    return ri * sum_sq.to(weight.device, torch.float32).sqrt().pow(alpha).unsqueeze(0)
