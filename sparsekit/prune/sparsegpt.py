"""SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot").

Layer-wise problem: find a masked W_hat minimising ||X W^T - X W_hat^T||^2 over calibration inputs X.
With the layer Hessian H = 2 X^T X, Optimal Brain Surgeon says that removing weight w_q of a row costs

    eps_q = w_q^2 / [H^-1]_qq                         (paper eq. 3)

and is best compensated by updating the remaining weights of the row by

    delta = -(w_q / [H^-1]_qq) * H^-1[:, q].

SparseGPT makes this affordable for LLMs (§3):

- columns are processed left to right, and the inverse Hessian of the *remaining* columns is read
  off the upper Cholesky factor of H^-1 (row q of U, U^T U = H^-1, is H^-1 restricted to columns >= q,
  scaled), so one factorisation serves every column and every row at once;
- the mask is chosen adaptively: for each block of `blocksize` columns (128 in the paper), the weights
  with the lowest eps inside that block are selected (for N:M, the lowest M-N of each group of M);
- updates are lazy: inside a block the correction is applied column by column, and the accumulated
  error is applied to all later columns with one matrix product per block (§3.4).

The dampening lambda = `dampening` * mean(diag H) is added to the diagonal before inversion (1% in
the paper) so that H is positive definite even for rarely-active inputs. All math is fp32 on the
weight's device (CPU or GPU); the result is cast back to the weight's dtype.
"""

from __future__ import annotations

from typing import Protocol

import torch

from sparsekit.errors import SparsekitError
from sparsekit.prune.patterns import UNSTRUCTURED, Pattern, check_shape, parse_pattern, pruned_count


def inverse_hessian_cholesky(hessian: torch.Tensor, dampening: float = 0.01) -> torch.Tensor:
    """Upper Cholesky factor U of (H + lambda I)^-1 (U^T U = (H + lambda I)^-1), fp32.

    Inputs that never fire (zero diagonal) get H_jj = 1: their weights see no data, so any value is
    "free" and OBS must not divide by zero.
    """
    if dampening < 0:
        raise SparsekitError(f"dampening must be >= 0, got {dampening}")
    h = hessian.detach().to(torch.float32).clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    diag = torch.diagonal(h)
    diag += dampening * diag.mean()
    try:
        chol = torch.linalg.cholesky(h)
        hinv = torch.cholesky_inverse(chol)
        return torch.linalg.cholesky(hinv, upper=True)
    except torch.linalg.LinAlgError as exc:
        raise SparsekitError(f"the layer Hessian is not positive definite even with dampening={dampening}; "
                             "raise the dampening or use more calibration samples") from exc


def _block_budgets(total: int, cols: int, blocksize: int) -> list[int]:
    """Split `total` removals over column blocks in proportion to their size, summing exactly to `total`."""
    bounds = list(range(0, cols, blocksize)) + [cols]
    cum = [round(total * b / cols) for b in bounds]
    return [cum[i + 1] - cum[i] for i in range(len(bounds) - 1)]


class ColumnQuantizer(Protocol):
    """What the sweep needs from a quantizer (see `sparsekit.quant.gptq.GroupQuantizer`)."""

    def start(self, w: torch.Tensor, keep: torch.Tensor) -> None:
        """Called once with the whole (permuted) weight and its keep-mask before the sweep."""

    def column(self, j: int, block: torch.Tensor, keep: torch.Tensor, j0: int) -> torch.Tensor:
        """Grid values of column `j` (absolute index); `block` / `keep` are the current lazy block,
        whose first column is `j0`, so a group starting at `j` can take its scale from them."""


@torch.no_grad()
def sparsegpt(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float = 0.5,
              pattern: Pattern | str = UNSTRUCTURED, *, blocksize: int = 128,
              dampening: float = 0.01, quantizer: ColumnQuantizer | None = None,
              mask: torch.Tensor | None = None, perm: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune `weight` ([out, in]) with OBS reconstruction; return `(new_weight, keep_mask)`.

    Args:
        hessian: `[in, in]`, proportional to X^T X of the layer inputs (the scale does not matter:
            dampening is relative to its mean diagonal).
        sparsity: fraction removed (unstructured; exactly round(sparsity * numel) weights overall,
            spread over column blocks in proportion to their width). Ignored for N:M patterns.
        pattern: 'unstructured' or N:M along the input dimension.
        blocksize: columns per lazy-update block (a multiple of M for N:M patterns).
        quantizer: also quantize every kept weight in the same sweep, so that later columns compensate
            both the pruning and the rounding error (the joint 50% + 4-bit mode of the SparseGPT paper,
            §3.5; with no pruning this is GPTQ).
        mask: a fixed keep-mask (e.g. from an earlier prune step) instead of choosing one; pruned
            weights become exactly 0 and their removal is compensated like any other.
        perm: process columns in this order (GPTQ's act-order); only with a fixed or no mask, since
            N:M groups and per-block budgets are defined in the natural column order.
    """
    pattern = parse_pattern(pattern)
    check_shape(pattern, tuple(weight.shape))
    rows, cols = weight.shape
    if hessian.shape != (cols, cols):
        raise SparsekitError(f"Hessian has shape {tuple(hessian.shape)}, expected ({cols}, {cols}) for a weight "
                             f"with {cols} inputs")
    if blocksize < 1 or (pattern.structured and blocksize % pattern.m):
        raise SparsekitError(f"blocksize must be a positive multiple of M={pattern.m or 1}, got {blocksize}")
    select = mask is None and (pattern.structured or sparsity > 0)
    if perm is not None and select:
        raise SparsekitError("a column order (act-order) needs a fixed keep-mask or no pruning: N:M groups and "
                             "SparseGPT's block budgets are defined in the natural column order")
    if mask is not None and tuple(mask.shape) != tuple(weight.shape):
        raise SparsekitError(f"mask has shape {tuple(mask.shape)}, expected {tuple(weight.shape)}")
    w = weight.detach().to(torch.float32).clone()
    h = hessian.to(w.device)
    keep = torch.ones_like(w, dtype=torch.bool) if mask is None else mask.to(w.device, torch.bool).clone()
    if perm is not None:
        perm = perm.to(w.device)
        w, h, keep = w[:, perm], h[perm][:, perm], keep[:, perm]
    hinv = inverse_hessian_cholesky(h, dampening)
    if quantizer is not None:
        quantizer.start(w, keep)
    if select and not pattern.structured:
        budgets = _block_budgets(pruned_count(sparsity, rows * cols), cols, blocksize)

    for b, i1 in enumerate(range(0, cols, blocksize)):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        d = torch.diagonal(hinv1)
        keep1 = keep[:, i1:i2].clone()
        if select and not pattern.structured and budgets[b] > 0:
            # eq. 3 over the whole block: the adaptive mask of §3.2
            eps = (w1 ** 2 / d.unsqueeze(0) ** 2).flatten()
            keep1.view(-1)[torch.topk(eps, budgets[b], largest=False).indices] = False
        for j in range(i2 - i1):
            if select and pattern.structured and j % pattern.m == 0:
                eps = w1[:, j:j + pattern.m] ** 2 / d[j:j + pattern.m].unsqueeze(0) ** 2
                drop = torch.topk(eps, pattern.m - pattern.n, dim=1, largest=False).indices
                keep1[:, j:j + pattern.m].scatter_(1, drop, False)
            col = w1[:, j]
            q = col if quantizer is None else quantizer.column(i1 + j, w1, keep1, i1)
            q = torch.where(keep1[:, j], q, torch.zeros_like(col))
            e = (col - q) / d[j]
            # OBS compensation of the not-yet-processed columns of this block
            w1[:, j:] -= e.unsqueeze(1) * hinv1[j, j:].unsqueeze(0)
            w1[:, j] = q
            err1[:, j] = e
        w[:, i1:i2] = w1
        keep[:, i1:i2] = keep1
        # lazy batched update of every column right of the block (§3.4)
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    w.masked_fill_(~keep, 0.0)
    if perm is not None:
        inv = torch.argsort(perm)
        w, keep = w[:, inv], keep[:, inv]
    return w.to(weight.dtype), keep
