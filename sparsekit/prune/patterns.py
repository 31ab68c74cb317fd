"""Sparsity patterns and mask selection from importance scores.

Convention: a *mask* is a bool tensor shaped like the weight `[out_features, in_features]`, True
where the weight is **kept**. Scores are "higher = more important"; selection removes the lowest.

Comparison groups (where scores are ranked against each other):

- `layer`: the whole matrix (the magnitude-pruning baseline of the Wanda / SparseGPT papers);
- `row`: each output row separately (Wanda, Sun et al. 2023, §3: "we compare weights on a
  per-output basis", which they found essential for LLMs);
- N:M: each group of M consecutive weights along the *input* dimension keeps N. This is the layout
  that sparse tensor cores execute (2:4 on Ampere/Hopper: `mma.sp` reads 2 values + 2-bit indices per
  4 inputs), so the groups must run along K, the reduction dimension of y = x W^T.

All selections are vectorised (`topk` over the group dimension) and remove an *exact* number of
weights, so that a budget of removed parameters is met to the weight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

import torch

from sparsekit.errors import SparsekitError

COMPARISON_GROUPS = ("layer", "row")


@dataclass(frozen=True)
class Pattern:
    """`unstructured` (n = m = 0) or N:M (keep n of every m consecutive inputs)."""

    n: int = 0
    m: int = 0

    @property
    def structured(self) -> bool:
        return self.m > 0

    @property
    def sparsity(self) -> float:
        """The sparsity an N:M pattern implies (unstructured patterns have none of their own)."""
        return 1.0 - self.n / self.m if self.m else float("nan")

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.m else "unstructured"


UNSTRUCTURED = Pattern()


def parse_pattern(text: str | Pattern) -> Pattern:
    """'unstructured' or 'N:M' with 0 < N < M (e.g. '2:4', '4:8')."""
    if isinstance(text, Pattern):
        return text
    text = str(text).strip().lower()
    if text in ("unstructured", "none", ""):
        return UNSTRUCTURED
    match = re.fullmatch(r"(\d+)\s*:\s*(\d+)", text)
    if not match:
        raise SparsekitError(f"pattern {text!r} is not 'unstructured' or 'N:M' (e.g. '2:4', '4:8')")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise SparsekitError(f"pattern {text!r} needs 0 < N < M (keep N of every M weights)")
    return Pattern(n, m)


def check_shape(pattern: Pattern, shape: tuple[int, ...], name: str = "weight") -> None:
    """Raise if an N:M pattern cannot tile the input dimension of a `[out, in]` weight."""
    if len(shape) != 2:
        raise SparsekitError(f"{name}: pruning needs a 2-D [out_features, in_features] weight, got {tuple(shape)}")
    if pattern.structured and shape[1] % pattern.m:
        raise SparsekitError(f"{name}: in_features={shape[1]} is not a multiple of M={pattern.m}, so the {pattern} "
                             "pattern cannot tile it; exclude this module (targets/exclude) or use another pattern")


def _check_ratio(sparsity: float) -> None:
    if not 0.0 <= sparsity <= 1.0:
        raise SparsekitError(f"sparsity must be in [0, 1], got {sparsity}")


def pruned_count(sparsity: float, numel: int) -> int:
    """Weights removed from a group of `numel` at `sparsity` (nearest integer, ties to even)."""
    _check_ratio(sparsity)
    return int(round(sparsity * numel))


def _remove_lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mask over the last dim of `scores` that drops the `k` lowest entries of every row."""
    mask = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        idx = torch.topk(scores, k, dim=-1, largest=False).indices
        mask.scatter_(-1, idx, False)
    return mask


def unstructured_mask(scores: torch.Tensor, sparsity: float, group: str = "row") -> torch.Tensor:
    """Keep-mask removing a `sparsity` fraction of the lowest scores, ranked per `group` ('row' | 'layer').

    'row' removes round(sparsity * in_features) weights from every row; 'layer' removes
    round(sparsity * numel) from the whole matrix.
    """
    if group == "row":
        return _remove_lowest(scores, pruned_count(sparsity, scores.shape[-1]))
    if group == "layer":
        flat = scores.reshape(1, -1)
        return _remove_lowest(flat, pruned_count(sparsity, flat.shape[-1])).reshape(scores.shape)
    raise SparsekitError(f"comparison group must be one of {COMPARISON_GROUPS}, got {group!r}")


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask with exactly `n` kept weights in every group of `m` consecutive inputs of each row."""
    pattern = parse_pattern(f"{n}:{m}")
    check_shape(pattern, tuple(scores.shape), "scores")
    out, k = scores.shape
    groups = scores.reshape(out, k // m, m)
    return _remove_lowest(groups, m - n).reshape(out, k)


def select_mask(scores: torch.Tensor, sparsity: float, pattern: Pattern | str = UNSTRUCTURED,
                group: str = "row") -> torch.Tensor:
    """One entry point: N:M patterns ignore `sparsity` and `group`; unstructured uses both."""
    pattern = parse_pattern(pattern)
    if pattern.structured:
        return nm_mask(scores, pattern.n, pattern.m)
    return unstructured_mask(scores, sparsity, group)


def is_nm(mask: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of `m` consecutive inputs keeps exactly `n` weights."""
    out, k = mask.shape
    if k % m:
        return False
    return bool((mask.reshape(out, k // m, m).sum(-1) == n).all())


def masks_sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of entries removed (False) over a set of keep-masks."""
    removed = sum(int((~m).sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return removed / total if total else 0.0
