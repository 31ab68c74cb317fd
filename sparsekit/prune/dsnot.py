"""DSnoT: training-free mask refinement (Zhang et al., ICLR 2024, "Dynamic Sparse No Training").

For an output row i with keep-mask m, the *expected* reconstruction error of the pruned row over the
calibration tokens is (§3.2)

    e_i = sum_j (1 - m_ij) W_ij E[x_j]

DSnoT lowers |e_i| by swapping weights, keeping the row's count (or each group's N of M):

- **grow** the pruned weight whose contribution c_ij = W_ij E[x_j] has the sign of e_i (reviving it
  moves e_i toward 0) and is largest relative to the channel's variance (eq. 4: c_ij / Var(x_j)^p,
  p = 1: a channel that varies a lot is a poor bet for an *expected* correction);
- **prune** in exchange the kept weight of least importance (the method's score, Wanda's
  |W| ||X|| by default; eq. 5) among those whose removal does not push e_i further from 0 (sign of
  c opposite to the error after growing), from the same group of M for N:M patterns, or any kept
  weight of the row for unstructured ones.

A swap is accepted only if |e_i| decreases (so the objective sum_i |e_i| never increases); a row
stops at its first non-improving swap, and all rows stop after `max_cycles` (the paper's 50).
All rows are refined at once (one vectorised swap per row per cycle).
"""

from __future__ import annotations

import torch

from sparsekit.prune.patterns import Pattern, parse_pattern

MAX_CYCLES = 50
VAR_POWER = 1.0


def expected_error(weight: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """e_i = sum_j (1 - m_ij) W_ij E[x_j] per output row (fp32): DSnoT's objective is sum_i |e_i|."""
    c = weight.float() * mean.to(weight.device, torch.float32).unsqueeze(0)
    return (c * (~mask)).sum(dim=1)


@torch.no_grad()
def dsnot_refine(weight: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor, mean: torch.Tensor,
                 var: torch.Tensor, pattern: Pattern | str = "unstructured", *, max_cycles: int = MAX_CYCLES,
                 var_power: float = VAR_POWER) -> torch.Tensor:
    """A refined keep-mask for the dense `weight` ([out, in]) given its `mask` and the pruning `scores`
    (higher = more important), the inputs' per-channel `mean` and `var`. Keeps every row's count of
    kept weights (N:M: every group's N); the input tensors are not modified."""
    pattern = parse_pattern(pattern)
    if mask.shape != weight.shape or scores.shape != weight.shape:
        raise ValueError(f"dsnot: weight {tuple(weight.shape)}, mask {tuple(mask.shape)} and scores "
                         f"{tuple(scores.shape)} must have one shape")
    mask = mask.clone()
    out, k = weight.shape
    c = weight.float() * mean.to(weight.device, torch.float32).unsqueeze(0)
    grow_value = c / (var.to(weight.device, torch.float32).unsqueeze(0) + 1e-12) ** var_power
    importance = scores.float()
    e = (c * (~mask)).sum(dim=1)
    rows = torch.arange(out, device=weight.device)
    cols = torch.arange(k, device=weight.device)
    active = torch.ones(out, dtype=torch.bool, device=weight.device)
    neg_inf = torch.tensor(float("-inf"), device=weight.device)
    inf = torch.tensor(float("inf"), device=weight.device)
    for _ in range(max_cycles):
        s = torch.sign(e).unsqueeze(1)
        # grow: a pruned weight whose contribution has the error's sign, best contribution per variance
        candidates = ~mask & (s * c > 0)
        g_score = torch.where(candidates, s * grow_value, neg_inf)
        g = g_score.argmax(dim=1)
        has_g = candidates[rows, g]
        e1 = e - c[rows, g]
        # prune: a kept weight (in g's group for N:M) that does not push the error further from 0
        kept = mask.clone()
        if pattern.structured:
            kept &= (cols // pattern.m).unsqueeze(0) == (g // pattern.m).unsqueeze(1)
        helpful = kept & (torch.sign(e1).unsqueeze(1) * c <= 0)
        pool = torch.where(helpful.any(dim=1, keepdim=True), helpful, kept)
        p = torch.where(pool, importance, inf).argmin(dim=1)
        has_p = pool[rows, p]
        e2 = e1 + c[rows, p]
        accept = active & has_g & has_p & (e2.abs() < e.abs())
        if not accept.any():
            break
        r = rows[accept]
        mask[r, g[accept]] = True
        mask[r, p[accept]] = False
        e = torch.where(accept, e2, e)
        active = accept
    return mask
