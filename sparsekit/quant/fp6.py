"""FP6 as in FP6-LLM (Xia et al. 2024): E3M2 elements with one fp16 scale per output channel.

    scale = fp16(amax / 28),      code = E3M2(w / scale),      value = E3M2 value * scale,

28 being E3M2's largest normal, so a row's largest weight maps to the top of the element range.
The scale is stored as fp16 (what the FP6-LLM kernel multiplies by after its FP6 -> fp16 bit
conversion), so it is rounded to fp16 here and the accuracy study sees what the kernel computes.
That rounding can make amax / scale slightly exceed 28 (by at most 2^-11 relative); the element
encode saturates, so the largest weight is clipped by that amount instead of overflowing.

Unlike MX there is no power-of-two constraint on the scale: it is a real multiplier, so divisions
here round (once, in fp32) before the element rounding.
"""

from __future__ import annotations

import torch

from sparsekit.errors import SparsekitError
from sparsekit.quant import minifloat as mf
from sparsekit.quant.base import PER_CHANNEL, PER_TENSOR, Params, QuantFormat, masked_amax

__all__ = ["FP6", "FP16_MAX"]

FP16_MAX = 65504.0


class FP6(QuantFormat):
    """FP6-LLM's E3M2 weights: one fp16 scale per output channel (or per group of K inputs)."""

    name = "fp6"
    element = mf.E3M2
    element_bits = 6.0
    scale_bits = 16
    zero_bits = 0

    def __init__(self, group_size: int = PER_CHANNEL) -> None:
        if group_size == PER_TENSOR:
            raise SparsekitError("fp6: scales are per output channel (group_size 0) or per group of K inputs "
                                 "(group_size > 0); per-tensor is not supported, use group_size=0")
        super().__init__(group_size)

    def params(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> Params:
        # clamp before the fp16 cast: a row with amax > 28 * 65504 would otherwise get an Inf scale
        # and decode to NaN; with the clamp its largest weights saturate instead.
        s = (masked_amax(x, keep) / self.element.max_normal).clamp(max=FP16_MAX).half().float()
        # an all-zero (or fully pruned) row, or one whose scale underflows fp16, gets 1: any
        # positive scale encodes its zeros as 0, and 1 keeps the division well defined.
        return (torch.where(s > 0, s, torch.ones_like(s)),)

    def encode(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return mf.encode(mf.divide_saturating(x, params[0], self.element), self.element)

    def decode(self, codes: torch.Tensor, params: Params) -> torch.Tensor:
        return mf.decode(codes, self.element) * params[0]
