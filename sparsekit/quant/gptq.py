"""GPTQ (Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers"), and the joint SparseGPT + GPTQ sweep.

GPTQ is the OBS sweep of SparseGPT with *rounding* in place of pruning: columns are quantized left
to right, and the rounding error of column q is compensated on the not-yet-quantized columns by
-(w_q - quant(w_q)) / [H^-1]_qq * H^-1[q, :] (paper eq. 2 with the Cholesky reformulation of §3 step 3),
with lazy batched updates per block of 128 columns and dampening of 1% of the mean Hessian diagonal.
The sweep itself is `sparsekit.prune.sparsegpt.sparsegpt`; this module supplies the quantizer:

- **groups**: a group's scale (and zero point) is computed when the sweep reaches the group's first
  column, from the *already error-compensated* weights of the group (as the reference GPTQ does);
  per-channel and per-tensor formats take theirs from the whole weight before the sweep;
- **act-order** (`act_order=True`): columns are processed by decreasing Hessian diagonal (the
  inputs with the most energy first, while the most freedom to compensate remains). Groups keep
  their natural column ranges, so with act-order group parameters are computed up front from the
  starting weights ("static groups"): a kernel then reads one scale per contiguous group of K;
- **a pruned layer**: with a keep-mask, pruned weights stay exactly 0, scales come from kept weights
  only, and the error of the kept weights is compensated on kept weights;
- **joint** (`sparsegpt(..., quantizer=...)`): the mask is chosen inside the same sweep and every
  kept weight is quantized as it is reached (SparseGPT paper §3.5, their 50% + 4-bit results).

Everything is fp32 on the weight's device.
"""

from __future__ import annotations

import torch

from sparsekit.errors import SparsekitError
from sparsekit.prune.patterns import UNSTRUCTURED, Pattern
from sparsekit.prune.sparsegpt import sparsegpt
from sparsekit.quant.base import PER_TENSOR, QTensor, QuantFormat


class GroupQuantizer:
    """Quantizes the columns of an OBS sweep with `fmt`, one scale per group of K inputs.

    It records the parameters it used (`table`: one `[rows, groups]` tensor per parameter), so that
    `qtensor()` returns codes + scales that decode to exactly the weights the sweep produced.
    """

    def __init__(self, fmt: QuantFormat, perm: torch.Tensor | None = None, blocksize: int = 128) -> None:
        self.fmt = fmt
        self.perm = perm
        self.blocksize = blocksize
        self.table: tuple[torch.Tensor, ...] = ()
        self.g = 0
        self.static = False

    def start(self, w: torch.Tensor, keep: torch.Tensor) -> None:
        rows, cols = w.shape
        self.g = self.fmt.group_width(cols, rows)
        if self.fmt.group_size == PER_TENSOR:
            self.static = True
            self.table = self.fmt.params(w.reshape(1, -1), keep.reshape(1, -1))
            return
        groups = -(-cols // self.g)
        # dynamic groups need whole groups inside one lazy block: the block's columns are up to date
        self.static = self.perm is not None or groups == 1 or self.blocksize % self.g != 0
        if self.perm is not None:
            inv = torch.argsort(self.perm)
            w, keep = w[:, inv], keep[:, inv]
        x, k, _ = self.fmt._groups(w, keep)
        table = self.fmt.params(x, k)
        self.table = tuple(t.reshape(rows, groups).clone() for t in table)

    def column(self, j: int, block: torch.Tensor, keep: torch.Tensor, j0: int) -> torch.Tensor:
        c = int(self.perm[j]) if self.perm is not None else j
        if self.fmt.group_size == PER_TENSOR:
            params = self.table
        else:
            gi = c // self.g
            if not self.static and c % self.g == 0:
                a = j - j0
                for t, p in zip(self.table, self.fmt.params(block[:, a:a + self.g], keep[:, a:a + self.g])):
                    t[:, gi:gi + 1] = p
            params = tuple(t[:, gi:gi + 1] for t in self.table)
        return self.fmt.fake(block[:, j - j0:j - j0 + 1], params).squeeze(1)

    def qtensor(self, w: torch.Tensor, keep: torch.Tensor) -> QTensor:
        """Codes and scales of the sweep's result `w` (natural column order) with the recorded params."""
        return self.fmt.qtensor(w, keep, tuple(t.reshape(-1, 1) for t in self.table))


@torch.no_grad()
def gptq(weight: torch.Tensor, hessian: torch.Tensor, fmt: QuantFormat, *, mask: torch.Tensor | None = None,
         act_order: bool = False, blocksize: int = 128, dampening: float = 0.01, name: str = "weight"
         ) -> tuple[torch.Tensor, QTensor]:
    """Quantize `weight` ([out, in]) with GPTQ; return `(dequantized_weight, qtensor)`.

    `mask` (keep-mask) makes it quantize a pruned layer: pruned weights stay exactly 0.
    """
    fmt.check_finite(weight, name)
    perm = torch.argsort(torch.diagonal(hessian), descending=True) if act_order else None
    quantizer = GroupQuantizer(fmt, perm, blocksize)
    new, keep = sparsegpt(weight, hessian, 0.0, UNSTRUCTURED, blocksize=blocksize, dampening=dampening,
                          quantizer=quantizer, mask=mask, perm=perm)
    return new, quantizer.qtensor(new, keep)


@torch.no_grad()
def sparsegpt_gptq(weight: torch.Tensor, hessian: torch.Tensor, fmt: QuantFormat, sparsity: float = 0.5,
                   pattern: Pattern | str = UNSTRUCTURED, *, blocksize: int = 128, dampening: float = 0.01,
                   name: str = "weight") -> tuple[torch.Tensor, torch.Tensor, QTensor]:
    """Prune and quantize in one OBS sweep; return `(dequantized_weight, keep_mask, qtensor)`."""
    fmt.check_finite(weight, name)
    if fmt.group_size > 0 and blocksize % fmt.group_size and fmt.group_size % blocksize:
        raise SparsekitError(f"{name}: blocksize {blocksize} and group size {fmt.group_size} must divide one another")
    quantizer = GroupQuantizer(fmt, None, blocksize)
    new, keep = sparsegpt(weight, hessian, sparsity, pattern, blocksize=blocksize, dampening=dampening,
                          quantizer=quantizer)
    return new, keep, quantizer.qtensor(new, keep)
