"""How much to prune in each module: pure functions from scores / sensitivities to per-module ratios.

- `uniform`: every targeted module at the same sparsity.
- `per_type_ratios`: a ratio per projection role (q, k, v, o, gate, up, down, ...) or sublayer group
  (attention, mlp), the knob of the module-specific study (seed 001).
- `global_threshold_counts`: one threshold over the scores of every targeted weight (global magnitude).
- `owl_ratios`: OWL (Yin et al. 2024, "Outlier Weighed Layerwise Sparsity"): blocks with more
  outliers keep more weights.
- `allocate_budget`: the solver behind `allocation: search`: given each module's measured cost of
  pruning at a few ratios, distribute a global budget of removed parameters so that the summed cost
  is minimal (see the function).

Every function returns either ratios in [0, 1] or exact counts of removed weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import ROLE_GROUP


def per_type_ratios(roles: Mapping[str, str], ratios: Mapping[str, float], default: float) -> dict[str, float]:
    """Ratio per module from `ratios` keyed by role ('q', ..., 'down') or group ('attention', 'mlp').

    A role key wins over its group's key; modules matched by neither get `default`.
    """
    known = set(ROLE_GROUP) | set(ROLE_GROUP.values())
    unknown = sorted(set(ratios) - known)
    if unknown:
        raise SparsekitError(f"per-type ratios: unknown module types {unknown}; use roles "
                             f"{sorted(ROLE_GROUP)} or groups ['attention', 'mlp']")
    for key, value in ratios.items():
        if not 0.0 <= float(value) <= 1.0:
            raise SparsekitError(f"per-type ratio for {key!r} must be in [0, 1], got {value}")
    out = {}
    for name, role in roles.items():
        out[name] = float(ratios.get(role, ratios.get(ROLE_GROUP[role], default)))
    return out


# -- global threshold -------------------------------------------------------------------------------
def _count_le(scores: Sequence[torch.Tensor], bits: int) -> int:
    t = torch.tensor(bits, dtype=torch.int32).view(torch.float32).item()
    return sum(int((s <= t).sum()) for s in scores)


def global_threshold_counts(scores: Mapping[str, torch.Tensor], budget: int) -> dict[str, int]:
    """Remove the `budget` lowest scores over all modules together; return the count removed per module.

    Exact to the weight: the threshold is found by bisection on the bit pattern of non-negative fp32
    values (which orders like the values), one counting sweep per step, so no concatenated copy of
    all scores is ever made; ties at the threshold go to modules in the given order.
    """
    total = sum(s.numel() for s in scores.values())
    if not 0 <= budget <= total:
        raise SparsekitError(f"cannot remove {budget} of {total} weights")
    tensors = [s.detach().float() for s in scores.values()]
    if any(bool((s < 0).any()) for s in tensors):
        raise ValueError("global threshold needs non-negative scores")
    if budget == 0:
        return {name: 0 for name in scores}
    lo, hi = 0, 0x7F800000  # +0.0 .. +inf as int32 bit patterns
    while lo < hi:  # smallest threshold t with count(score <= t) >= budget
        mid = (lo + hi) // 2
        if _count_le(tensors, mid) >= budget:
            hi = mid
        else:
            lo = mid + 1
    t = torch.tensor(lo, dtype=torch.int32).view(torch.float32).item()
    counts = {name: int((s < t).sum()) for name, s in zip(scores, tensors)}
    need = budget - sum(counts.values())
    for name, s in zip(scores, tensors):
        ties = int((s == t).sum())
        take = min(ties, need)
        counts[name] += take
        need -= take
    return counts


# -- OWL --------------------------------------------------------------------------------------------
def outlier_ratio(scores: Sequence[torch.Tensor], threshold: float = 5.0) -> float:
    """OWL's layer-wise outlier distribution D_l: the fraction of a block's Wanda scores above
    `threshold` (OWL's M) times their mean, all projections of the block pooled."""
    flat = torch.cat([s.detach().float().flatten() for s in scores])
    return float((flat > threshold * flat.mean()).float().mean())


def owl_ratios(outliers: Sequence[float], sparsity: float, spread: float = 0.08) -> list[float]:
    """Per-block sparsity from outlier ratios (OWL, §4): min-max scale D to [0, 2*lambda], centre it on
    the target density 1 - sparsity, and give block l sparsity 1 - density_l. The mean over blocks is
    the target, so equal-sized blocks meet the global budget."""
    if spread < 0:
        raise SparsekitError(f"OWL spread (lambda) must be >= 0, got {spread}")
    d = torch.tensor(list(outliers), dtype=torch.float64)
    if d.numel() == 0:
        return []
    span = float(d.max() - d.min())
    scaled = (d - d.min()) / span * (2 * spread) if span > 0 else torch.zeros_like(d)
    density = scaled - scaled.mean() + (1.0 - sparsity)
    ratios = (1.0 - density).tolist()
    bad = [i for i, r in enumerate(ratios) if not -1e-9 <= r <= 1 + 1e-9]
    if bad:
        raise SparsekitError(f"OWL spread lambda={spread} pushes the sparsity of blocks {bad} outside [0, 1] at "
                             f"target {sparsity}; use a spread below min(sparsity, 1 - sparsity)")
    return [min(max(r, 0.0), 1.0) for r in ratios]


# -- budgeted allocation (allocation: search) -------------------------------------------------------
@dataclass(frozen=True)
class CostCurve:
    """Measured cost of pruning one module at a few ratios.

    `size` is the module's weight count; `granularity` the number of weights removed per step of its
    selection rule (a row-wise rule removes one weight per output row: out_features; a layer-wise or
    SparseGPT rule: 1). `size` must be a multiple of it. Cost at ratio 0 is 0 by definition.
    """

    size: int
    granularity: int
    ratios: tuple[float, ...]
    costs: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.granularity < 1 or self.size % self.granularity:
            raise ValueError(f"size {self.size} is not a multiple of granularity {self.granularity}")
        if len(self.ratios) != len(self.costs) or not self.ratios:
            raise ValueError("a cost curve needs one cost per ratio")
        if any(not 0.0 < r <= 1.0 for r in self.ratios):
            raise ValueError(f"curve ratios must be in (0, 1], got {self.ratios}")
        if any(not math.isfinite(c) for c in self.costs):
            raise ValueError(f"curve costs must be finite, got {self.costs}")

    @property
    def units(self) -> int:
        return self.size // self.granularity

    def max_units(self) -> int:
        return int(math.floor(max(self.ratios) * self.units + 1e-9))

    def hull(self) -> list[tuple[float, float]]:
        """Lower convex hull of (units removed, cost), starting at (0, 0)."""
        pts = sorted({(0.0, 0.0), *((r * self.units, c) for r, c in zip(self.ratios, self.costs))})
        hull: list[tuple[float, float]] = []
        for p in pts:
            while len(hull) >= 2:
                (x1, y1), (x2, y2) = hull[-2], hull[-1]
                if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) <= 0:  # hull[-1] lies on/above the chord
                    hull.pop()
                else:
                    break
            hull.append(p)
        return hull


def allocate_budget(curves: Mapping[str, CostCurve], budget: int) -> dict[str, int]:
    """Weights to remove per module, summing to `budget` within one selection step, at minimal total cost.

    The cost of a plan is modelled as additive over modules, each curve interpolated linearly between
    its measured ratios. On the lower convex hull of each curve the marginal cost per removed weight
    (a normalised-impact-per-parameter score, like NRI in seed 002) increases, so the optimum of the
    relaxed problem is greedy: take hull segments in order of increasing cost per removed weight until
    the budget is spent (equivalently, a Lagrangian threshold on marginal cost). The fractional
    solution is then rounded down to whole selection steps, and the remainder handed out one step at a
    time to the modules with the cheapest next step that fits, so the total is exact up to less than
    one step of the smallest-granularity module that still has room. No module leaves [0, max ratio].
    """
    capacity = sum(c.max_units() * c.granularity for c in curves.values())
    if not 0 <= budget <= capacity:
        raise SparsekitError(f"cannot remove {budget:,} weights: the search ratios allow at most {capacity:,} "
                             "(raise the largest search ratio or lower the sparsity)")
    hulls = {name: curve.hull() for name, curve in curves.items()}
    segments = []  # (cost per removed weight, name, start units, end units)
    for name, curve in curves.items():
        hull = hulls[name]
        for (x1, y1), (x2, y2) in zip(hull, hull[1:]):
            segments.append(((y2 - y1) / ((x2 - x1) * curve.granularity), name, x1, x2))
    segments.sort(key=lambda s: s[0])
    units = {name: 0.0 for name in curves}
    left = float(budget)
    for slope, name, x1, x2 in segments:
        if left <= 0:
            break
        g = curves[name].granularity
        take = min(x2 - x1, left / g)
        units[name] += take
        left -= take * g
    whole = {name: min(int(math.floor(u + 1e-9)), curves[name].max_units()) for name, u in units.items()}
    remainder = budget - sum(whole[n] * curves[n].granularity for n in curves)

    def next_step_cost(name: str) -> float:
        """Marginal cost per weight of one more step at the module's current point."""
        hull, x = hulls[name], whole[name]
        for (x1, y1), (x2, y2) in zip(hull, hull[1:]):
            if x1 <= x < x2:
                return (y2 - y1) / ((x2 - x1) * curves[name].granularity)
        return math.inf

    while remainder > 0:
        fits = [n for n in curves if curves[n].granularity <= remainder and whole[n] < curves[n].max_units()]
        if not fits:
            break
        best = min(fits, key=next_step_cost)
        whole[best] += 1
        remainder -= curves[best].granularity
    return {name: whole[name] * curves[name].granularity for name in curves}
