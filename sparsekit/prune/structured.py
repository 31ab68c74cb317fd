"""Structured importance scores: which decoder blocks a model can lose (pure functions over hidden states).

**Block Influence** (ShortGPT, Men et al. 2024, eq. 2): a block that barely turns its input into a
different direction does little,

    BI_i = 1 - E_t[ cos(x_i,t , x_{i+1,t}) ],

over calibration tokens t, with x_i the hidden state entering block i and x_{i+1} the one leaving it.
The blocks with the lowest BI are removed.

**Normalised relative impact** (NRI, seed 002): removing a candidate (a block's attention or MLP)
costs the relative increase of the calibration loss per parameter it frees,

    NRI = (L_without - L) / L / params,

so a large sublayer that hurts a little ranks before a small one that hurts as much.

**Expert usage** (MoE): over calibration tokens, how often the router sends a token to each expert
(top-k of the softmax of its logits) and with what total routing weight; the least used experts of a
block are dropped (the frequency-based criterion of the expert-pruning literature).

**Angular distance** (Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers",
eq. 7): for a span of n blocks starting at l,

    d(l, n) = E_s[ arccos(cos(x_l , x_{l+n})) / pi ],

measured on the *last* token of each calibration sequence s (the position whose representation the
next-token prediction reads), and the contiguous span with the smallest d is removed. `tokens='all'`
averages over every token instead.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from sparsekit.errors import SparsekitError


def cosine_per_token(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a_t, b_t) for every token of two `[..., hidden]` tensors (fp32, flattened to `[tokens]`)."""
    a2 = a.reshape(-1, a.shape[-1]).float()
    b2 = b.reshape(-1, b.shape[-1]).float()
    return torch.nn.functional.cosine_similarity(a2, b2, dim=-1, eps=1e-12)


def block_influence(inputs: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor]) -> float:
    """ShortGPT's BI of one block from its input and output hidden states (one tensor per batch)."""
    cos = torch.cat([cosine_per_token(x, y) for x, y in zip(inputs, outputs)])
    return float(1.0 - cos.mean())


def angular_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean of arccos(cos) / pi over the rows of two `[rows, hidden]` tensors (0: same direction, 1: opposite)."""
    cos = cosine_per_token(a, b).clamp(-1.0, 1.0)
    return float((torch.arccos(cos) / math.pi).mean())


def angular_span_distances(hidden: Sequence[torch.Tensor], n: int) -> list[float]:
    """d(l, n) for every start l = 0..L-n, from the hidden states entering blocks 0..L (`hidden[L]` is the
    last block's output), each `[rows, hidden]`."""
    blocks = len(hidden) - 1
    if not 0 < n <= blocks:
        raise SparsekitError(f"a span of n={n} blocks is impossible in a model with {blocks} blocks")
    return [angular_distance(hidden[l], hidden[l + n]) for l in range(blocks - n + 1)]


def lowest(scores: Sequence[float], n: int) -> list[int]:
    """Indices of the `n` lowest scores, ascending by index (ties: the later block, as deeper ones matter less)."""
    if not 0 <= n <= len(scores):
        raise SparsekitError(f"cannot remove {n} of {len(scores)} blocks")
    order = sorted(range(len(scores)), key=lambda i: (scores[i], -i))
    return sorted(order[:n])


def nri(loss: float, loss_without: float, params: int) -> float:
    """Normalised relative impact of removing a candidate of `params` parameters (module docstring)."""
    if params <= 0:
        raise SparsekitError(f"a candidate must hold parameters to be removed, got {params}")
    return (loss_without - loss) / loss / params


def choose_under_budget(scores: dict, params: dict, budget: int) -> list:
    """Candidates in increasing score order, each taken if it still fits in `budget` parameters."""
    chosen, spent = [], 0
    for key in sorted(scores, key=lambda k: (scores[k], str(k))):
        if spent + params[key] <= budget:
            chosen.append(key)
            spent += params[key]
    return chosen


def channel_scores(w_down: torch.Tensor, sum_sq: torch.Tensor) -> torch.Tensor:
    """Importance of each MLP intermediate channel j: ||W_down[:, j]|| * ||X_j|| (X: the down projection's
    input over calibration tokens), Wanda's |W| x ||X|| lifted from a weight to the channel it feeds."""
    return w_down.detach().float().norm(dim=0) * sum_sq.float().clamp(min=0).sqrt().to(w_down.device)


def kv_group_scores(w_o: torch.Tensor, sum_sq: torch.Tensor, head_dim: int, heads_per_group: int) -> torch.Tensor:
    """Importance of each KV group: the channel scores (as `channel_scores`, on the output projection's
    input, i.e. the concatenated head outputs) summed over the head dims of the group's query heads."""
    per_dim = channel_scores(w_o, sum_sq)
    return per_dim.reshape(-1, heads_per_group * head_dim).sum(dim=1)


def keep_top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Sorted indices of the `keep` highest scores."""
    if not 0 < keep <= scores.numel():
        raise SparsekitError(f"cannot keep {keep} of {scores.numel()} units")
    return torch.topk(scores, keep).indices.sort().values


def expert_usage(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens routed to each expert, summed renormalised top-k routing weight per expert) for logits
    `[tokens, experts]`."""
    probs = torch.softmax(router_logits.float(), dim=-1)
    top, idx = torch.topk(probs, top_k, dim=-1)
    top = top / top.sum(dim=-1, keepdim=True)
    experts = router_logits.shape[-1]
    counts = torch.zeros(experts, device=idx.device).scatter_add_(0, idx.reshape(-1), torch.ones(idx.numel(),
                                                                                                  device=idx.device))
    weight = torch.zeros(experts, device=idx.device).scatter_add_(0, idx.reshape(-1), top.reshape(-1))
    return counts, weight
