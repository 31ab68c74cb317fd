"""Channel permutation for N:M sparsity (RIA, Zhang et al., ICLR 2024, §3.3).

An N:M mask keeps N of every M *consecutive* input channels of each row. When the important channels
crowd the same groups, each group must drop some of them while other groups keep unimportant ones.
Reordering the input channels before masking (and undoing the order where it costs nothing, see
`sparsekit.models.surgery.permute_mlp_channels` / `permute_value_channels`) lets the mask keep more
of the score. The objective, for scores S [rows, K] and a permutation p:

    retained(p) = sum_rows sum_groups (sum of the N largest S[row, p[j]] over the group's M channels j)

Two stages, as in the paper:

1. **Allocation.** Channels sorted by their total score are dealt to the K/M groups in a snake order
   (group 0..G-1, then G-1..0, ...), so every group gets one channel of each importance tier (kept
   only if it retains more than the order as it is).
2. **Linear sum assignment.** Repeatedly take the channel in slot s of every group out and reassign
   the G loose channels to the G groups optimally (Hungarian algorithm, `scipy.optimize.linear_sum_
   assignment`), cycling s over the M slots, until a full cycle gains nothing or `rounds` is reached.
   Adding a channel c to a group whose other M-1 channels have, in row r, N-th largest value t_r
   raises the group's retained score by sum_r max(0, S[r, c] - t_r): the whole gain matrix is one
   broadcast, no sort per candidate.

Each reassignment keeps the current placement feasible, so `retained` never decreases: the result
retains at least what the unpermuted order does.
"""

from __future__ import annotations

import torch

from sparsekit.prune.patterns import Pattern, parse_pattern

ROUNDS = 12


def retained(scores: torch.Tensor, n: int, m: int, perm: torch.Tensor | None = None) -> float:
    """Sum of the scores an N:M mask keeps after reordering the input channels by `perm` (None: as is)."""
    s = scores if perm is None else scores[:, perm]
    rows, k = s.shape
    return float(s.float().reshape(rows, k // m, m).topk(n, dim=-1).values.sum())


def _snake(scores: torch.Tensor, m: int) -> torch.Tensor:
    """groups [G, M] of channel indices: channels by total score, dealt in snake order."""
    k = scores.shape[1]
    g = k // m
    order = scores.float().sum(dim=0).argsort(descending=True)
    groups = torch.empty(g, m, dtype=torch.long)
    for tier in range(m):
        chunk = order[tier * g:(tier + 1) * g]
        groups[:, tier] = chunk if tier % 2 == 0 else chunk.flip(0)
    return groups


def _gain(scores: torch.Tensor, rest: torch.Tensor, loose: torch.Tensor, n: int, chunk: int = 64) -> torch.Tensor:
    """gain[c, g] = retained score of group g (its M-1 channels `rest[g]`) with loose channel c added."""
    s = scores.float()
    part = s[:, rest]                                   # [rows, G, M-1]
    top = part.topk(n, dim=-1).values                   # N largest of the M-1 (N <= M-1)
    base = top.sum(dim=(0, 2))                          # [G]
    threshold = top[..., -1]                            # [rows, G]: the N-th largest
    cand = s[:, loose]                                  # [rows, C]
    out = torch.empty(loose.numel(), rest.shape[0])
    for i in range(0, loose.numel(), chunk):
        c = cand[:, i:i + chunk]                        # [rows, c]
        out[i:i + chunk] = (c.unsqueeze(2) - threshold.unsqueeze(1)).clamp_min(0).sum(dim=0)
    return out + base.unsqueeze(0)


@torch.no_grad()
def nm_permutation(scores: torch.Tensor, pattern: Pattern | str, rounds: int = ROUNDS) -> torch.Tensor:
    """A permutation `p` of the K input channels (`scores[:, p]` is the reordered matrix) that raises the
    score an N:M mask retains. `scores`: [rows, K] importance (higher = keep), K a multiple of M."""
    from scipy.optimize import linear_sum_assignment

    pattern = parse_pattern(pattern)
    if not pattern.structured:
        raise ValueError("channel permutation needs an N:M pattern")
    n, m = pattern.n, pattern.m
    if scores.dim() != 2 or scores.shape[1] % m:
        raise ValueError(f"scores must be [rows, K] with K a multiple of {m}, got {tuple(scores.shape)}")
    scores = scores.detach().float().cpu()
    k = scores.shape[1]
    # start from the better of the snake allocation and the order as it is (never worse than no permutation)
    starts = [_snake(scores, m), torch.arange(k).reshape(k // m, m)]
    values = [retained(scores, n, m, g.reshape(-1)) for g in starts]
    groups, best = (starts[0], values[0]) if values[0] > values[1] else (starts[1], values[1])
    if groups.shape[0] == 1:
        return groups.reshape(-1)
    stale = 0
    for r in range(rounds):
        slot = r % m
        loose = groups[:, slot]
        rest = torch.cat([groups[:, :slot], groups[:, slot + 1:]], dim=1)
        gain = _gain(scores, rest, loose, n)
        rows, cols = linear_sum_assignment(gain.numpy(), maximize=True)
        new = groups.clone()
        new[torch.as_tensor(cols), slot] = loose[torch.as_tensor(rows)]
        value = retained(scores, n, m, new.reshape(-1))
        if value > best:
            groups, best, stale = new, value, 0
        else:
            stale += 1
            if stale >= m:  # a whole cycle of slots without gain
                break
    return groups.reshape(-1)
