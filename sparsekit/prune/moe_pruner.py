"""MoE-Pruner (Xie et al. 2024): router-weighted unstructured pruning inside the experts of a MoE layer.

A weight of expert e matters by its magnitude, the size of its input, and how much the router
trusts that expert for the tokens that reach it:

    S_ij = |W_ij| * || X_j * G ||_2 ,

where X_j is input channel j over the tokens routed to e and G their routing weights (the
renormalised top-k gate values). It is Wanda's score with every token's activation scaled by its
gate, compared per output row. The statistics are accumulated here from what an experts module
receives (`accumulate_expert_stats`); `moe_pruner_masks` turns them into keep-masks for the fused
`[experts, out, in]` parameters (unstructured or N:M along the input dimension).
"""

from __future__ import annotations

from typing import Callable

import torch

from sparsekit.prune.patterns import Pattern, select_mask
from sparsekit.prune.wanda import wanda_scores


@torch.no_grad()
def accumulate_expert_stats(stats: dict[str, torch.Tensor], hidden: torch.Tensor, top_k_index: torch.Tensor,
                            top_k_weights: torch.Tensor, gate_up: torch.Tensor, act: Callable) -> None:
    """Add one forward's gate-weighted sums of squares to `stats` ('gate_up': `[E, H]`, 'down': `[E, I]`).

    `gate_up` is the fused `[E, 2I, H]` parameter (the down projection's input, act(gate) * up, is
    recomputed for each expert's tokens)."""
    experts, two_i, h = gate_up.shape
    x = hidden.reshape(-1, h).float()
    stats.setdefault("gate_up", torch.zeros(experts, h, device=x.device))
    stats.setdefault("down", torch.zeros(experts, two_i // 2, device=x.device))
    for e in range(experts):
        token, slot = torch.where(top_k_index == e)
        if token.numel() == 0:
            continue
        g = top_k_weights[token, slot].float().unsqueeze(1)
        xe = x[token]
        stats["gate_up"][e] += ((xe * g) ** 2).sum(0)
        gate, up = torch.nn.functional.linear(xe, gate_up[e].float()).chunk(2, dim=-1)
        stats["down"][e] += ((act(gate) * up * g) ** 2).sum(0)


def moe_pruner_masks(weight: torch.Tensor, gated_sum_sq: torch.Tensor, sparsity: float,
                     pattern: Pattern | str = "unstructured") -> torch.Tensor:
    """Keep-mask of a fused `[E, out, in]` expert parameter from `[E, in]` gate-weighted statistics."""
    return torch.stack([select_mask(wanda_scores(weight[e], gated_sum_sq[e]), sparsity, pattern, "row")
                        for e in range(weight.shape[0])])
