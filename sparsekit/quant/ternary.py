"""Ternary weights {-1, 0, +1} x one absmean scale per tensor, as BitNet b1.58 (Ma et al. 2024, eq. 1-3):

    gamma = mean(|W|),        W_q = RoundClip(W / (gamma + eps), -1, 1),        W ~ gamma * W_q.

The absmean (not absmax) scale is what makes b1.58 work: with absmax almost every weight would round
to 0. With a keep-mask the mean runs over kept weights only, so a pruned layer is not pushed to 0.

Storage: log2(3) = 1.58 bits carry the information, but a kernel reads 2-bit codes (four per byte),
so `element_bits` is 2; the scale is one fp16.
"""

from __future__ import annotations

import torch

from sparsekit.quant.base import PER_TENSOR, Params, QuantFormat

EPS = 1e-5


class Ternary(QuantFormat):
    """BitNet b1.58 ternary codes with one absmean scale (per tensor by default, or per group)."""

    name = "ternary"
    element_bits = 2.0
    scale_bits = 16

    def __init__(self, group_size: int = PER_TENSOR) -> None:
        super().__init__(group_size)

    def params(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> Params:
        a = x.abs()
        if keep is None:
            gamma = a.mean(dim=1, keepdim=True)
        else:
            gamma = a.masked_fill(~keep, 0).sum(dim=1, keepdim=True) / keep.sum(dim=1, keepdim=True).clamp(min=1)
        return ((gamma + EPS).to(torch.float16).to(torch.float32),)

    def encode(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return torch.round(x / params[0]).clamp(-1, 1).to(torch.int8)

    def decode(self, codes: torch.Tensor, params: Params) -> torch.Tensor:
        return codes.to(torch.float32) * params[0]
