"""One entry point over the pruning methods: weight + statistics in, (new weight, keep mask) out.

| method    | score                       | ranked per   | reconstruction | needs              |
|-----------|-----------------------------|--------------|----------------|--------------------|
| magnitude | abs(W)                      | layer        | none           | nothing            |
| wanda     | abs(W) * norm of input col  | output row   | none           | sum x^2            |
| ria       | relative abs(W) * norm^0.5  | output row   | none           | sum x^2            |
| sparsegpt | w^2 / [H^-1]_qq (OBS)       | column block | OBS update     | X^T X (Hessian)    |

N:M patterns rank inside each group of M inputs for every method. The score methods (no weight
update) may have their masks refined by DSnoT (`sparsekit.prune.dsnot`), which needs the inputs'
channel means and variances (collected with sum x^2).

What each method needs and allows is one `MethodTraits` record in `TRAITS`: recipe validation, the
prune step and the sensitivity search ask the traits, so a new method is one row there plus its
branch in `prune_weight`, not a hunt for `method == ...` tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from sparsekit.calib.stats import LinearStats
from sparsekit.errors import SparsekitError
from sparsekit.prune.dsnot import dsnot_refine
from sparsekit.prune.magnitude import magnitude_scores
from sparsekit.prune.patterns import Pattern, check_shape, parse_pattern, select_mask
from sparsekit.prune.ria import ria_scores
from sparsekit.prune.sparsegpt import sparsegpt
from sparsekit.prune.wanda import wanda_scores

Stats = Literal["sum_sq", "hessian"]


@dataclass(frozen=True)
class MethodTraits:
    """What a pruning method needs from calibration and which recipe options it supports.

    stats: the per-projection calibration statistics it reads: None (data-free), 'sum_sq' (the
        squared input norms, Wanda) or 'hessian' (X^T X, SparseGPT).
    group: what its unstructured selection ranks over: 'layer' (one threshold per module), 'row'
        (the same count removed from each output row) or 'column_block' (SparseGPT's adaptive masks
        per lazy-update block of inputs, over all rows).
    nm: supports N:M patterns (ranks inside each group of M inputs).
    global_scores: its raw scores are comparable across layers, so one threshold over the whole model
        (`allocation: global`) means something.
    activation_aware: its scores weigh the weights by their inputs, so OWL's outlier ratio of those
        scores measures what OWL assumes (`allocation: owl`).
    column_blocks: processes inputs in lazy-update blocks of `blocksize` columns; an N:M group must not
        straddle two blocks.
    joint_quantization: its column sweep can quantize the kept weights as it goes (`quantize: {joint: true}`).
    moe_experts: has a score for the fused MoE expert weights (`experts: true`, MoE-Pruner).
    refinable: a score method on calibration statistics whose masks DSnoT may refine (`dsnot` option):
        the weights stay the dense ones, so swapping which are kept is meaningful.
    """

    stats: Stats | None
    group: Literal["layer", "row", "column_block"]
    nm: bool = True
    global_scores: bool = False
    activation_aware: bool = False
    column_blocks: bool = False
    joint_quantization: bool = False
    moe_experts: bool = False
    refinable: bool = False

    @property
    def data_free(self) -> bool:
        """Whether the method prunes without calibration data."""
        return self.stats is None


#: Every pruning method with its traits; the order is the one error messages and built-ins list.
TRAITS: dict[str, MethodTraits] = {
    "magnitude": MethodTraits(stats=None, group="layer", global_scores=True),
    "wanda": MethodTraits(stats="sum_sq", group="row", activation_aware=True, moe_experts=True, refinable=True),
    "ria": MethodTraits(stats="sum_sq", group="row", activation_aware=True, refinable=True),
    "sparsegpt": MethodTraits(stats="hessian", group="column_block", activation_aware=True, column_blocks=True,
                              joint_quantization=True),
}

METHODS = tuple(TRAITS)


def method_traits(method: str) -> MethodTraits:
    """The traits of `method`; a `SparsekitError` listing the known methods otherwise."""
    try:
        return TRAITS[method]
    except KeyError:
        raise SparsekitError(f"unknown pruning method {method!r}; known: {', '.join(METHODS)}") from None


def methods_with(trait: str) -> tuple[str, ...]:
    """The methods whose boolean `trait` (or property, e.g. 'data_free') is true, in `METHODS` order; error
    messages name them so that they stay right when a method is added."""
    return tuple(m for m, t in TRAITS.items() if getattr(t, trait))


def needs_stats(method: str) -> Stats | None:
    """'hessian', 'sum_sq' or None: what calibration must collect for `method`."""
    return method_traits(method).stats


def granularity(method: str, pattern: Pattern | str, shape: tuple[int, int]) -> int:
    """Weights removed per step of the method's unstructured selection rule (see allocate_budget):
    a per-row rule removes the same count from each of the `out_features` rows."""
    if parse_pattern(pattern).structured:
        return shape[0] * shape[1]
    return shape[0] if method_traits(method).group == "row" else 1


def method_scores(method: str, weight: torch.Tensor, stats: LinearStats | None) -> torch.Tensor:
    """The importance scores of a score method (higher = keep), fp32, shaped like `weight`."""
    if method == "magnitude":
        return magnitude_scores(weight)
    if method == "wanda":
        return wanda_scores(weight, stats.sum_sq)
    if method == "ria":
        return ria_scores(weight, stats.sum_sq)
    raise ValueError(f"pruning method {method!r} has no importance score of its own")


@torch.no_grad()
def prune_weight(method: str, weight: torch.Tensor, stats: LinearStats | None, sparsity: float,
                 pattern: Pattern | str = "unstructured", *, blocksize: int = 128,
                 dampening: float = 0.01, dsnot: tuple[int, float] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return `(pruned_weight, keep_mask)` for a `[out, in]` weight; the input is not modified.

    dsnot: `(max_cycles, var_power)` to refine a score method's mask with DSnoT (needs `stats` with
    channel sums), or None.
    """
    pattern = parse_pattern(pattern)
    check_shape(pattern, tuple(weight.shape))
    if method not in TRAITS:
        raise ValueError(f"unknown pruning method {method!r}; known: {', '.join(METHODS)}")
    traits = TRAITS[method]
    if traits.stats is not None and stats is None:
        raise ValueError(f"{method} needs calibration statistics of the layer inputs")
    if dsnot is not None and (not traits.refinable or stats is None):
        raise ValueError(f"dsnot refines the masks of {', '.join(methods_with('refinable'))} (with calibration "
                         f"statistics); got method {method!r}")
    if method in ("magnitude", "wanda", "ria"):
        scores = method_scores(method, weight, stats)
        mask = select_mask(scores, sparsity, pattern, traits.group)
        if dsnot is not None:
            mask = dsnot_refine(weight, mask, scores, stats.mean(), stats.var(), pattern, max_cycles=dsnot[0],
                                var_power=dsnot[1])
        return weight.masked_fill(~mask, 0), mask
    if method == "sparsegpt":
        if stats.xtx is None:
            raise ValueError("sparsegpt needs the layer Hessian: calibrate with hessian=True")
        return sparsegpt(weight, stats.xtx, sparsity, pattern, blocksize=blocksize, dampening=dampening)
    raise ValueError(f"pruning method {method!r} has traits but no branch in prune_weight")
