"""One entry point over the pruning methods: weight + statistics in, (new weight, keep mask) out.

| method    | score                       | ranked per   | reconstruction | needs              |
|-----------|-----------------------------|--------------|----------------|--------------------|
| magnitude | abs(W)                      | layer        | none           | nothing            |
| wanda     | abs(W) * norm of input col  | output row   | none           | sum x^2            |
| sparsegpt | w^2 / [H^-1]_qq (OBS)       | column block | OBS update     | X^T X (Hessian)    |

N:M patterns rank inside each group of M inputs for every method.
"""

from __future__ import annotations

import torch

from sparsekit.calib.stats import LinearStats
from sparsekit.prune.magnitude import magnitude_scores
from sparsekit.prune.patterns import Pattern, check_shape, parse_pattern, select_mask
from sparsekit.prune.sparsegpt import sparsegpt
from sparsekit.prune.wanda import wanda_scores

METHODS = ("magnitude", "wanda", "sparsegpt")

#: Which comparison group each method's unstructured selection ranks over.
GROUP = {"magnitude": "layer", "wanda": "row"}


def needs_stats(method: str) -> str | None:
    """'hessian', 'sum_sq' or None: what calibration must collect for `method`."""
    return {"sparsegpt": "hessian", "wanda": "sum_sq"}.get(method)


def granularity(method: str, pattern: Pattern | str, shape: tuple[int, int]) -> int:
    """Weights removed per step of the method's unstructured selection rule (see allocate_budget):
    a per-row rule removes the same count from each of the `out_features` rows."""
    if parse_pattern(pattern).structured:
        return shape[0] * shape[1]
    return shape[0] if GROUP.get(method) == "row" else 1


@torch.no_grad()
def prune_weight(method: str, weight: torch.Tensor, stats: LinearStats | None, sparsity: float,
                 pattern: Pattern | str = "unstructured", *, blocksize: int = 128,
                 dampening: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Return `(pruned_weight, keep_mask)` for a `[out, in]` weight; the input is not modified."""
    pattern = parse_pattern(pattern)
    check_shape(pattern, tuple(weight.shape))
    if method == "magnitude":
        mask = select_mask(magnitude_scores(weight), sparsity, pattern, GROUP[method])
        return weight.masked_fill(~mask, 0), mask
    if stats is None:
        raise ValueError(f"{method} needs calibration statistics of the layer inputs")
    if method == "wanda":
        mask = select_mask(wanda_scores(weight, stats.sum_sq), sparsity, pattern, GROUP[method])
        return weight.masked_fill(~mask, 0), mask
    if method == "sparsegpt":
        if stats.xtx is None:
            raise ValueError("sparsegpt needs the layer Hessian: calibrate with hessian=True")
        return sparsegpt(weight, stats.xtx, sparsity, pattern, blocksize=blocksize, dampening=dampening)
    raise ValueError(f"unknown pruning method {method!r}; known: {', '.join(METHODS)}")
