"""Integer formats int2/int3/int4/int8: round-to-nearest with one scale per group of K inputs.

Symmetric (`IntFormat(bits, symmetric=True)`): the restricted range, codes in [-q, q] with
q = 2^(b-1) - 1, and

    scale = amax / q,       value = code * scale,

so the largest weight of a group is represented exactly and nothing is clipped; the code -2^(b-1)
is left unused, which keeps the grid symmetric and makes quantization idempotent (values already on
the grid come back bit-exactly, as a kernel's own re-quantization must). Asymmetric: codes in
[0, 2^b - 1] with an integer zero point,

    scale = (max - min) / (2^b - 1),      zero = round(-min / scale),      value = (code - zero) * scale,

where [min, max] is widened to include 0 so that 0 — every pruned weight — is exactly on the grid.

Scales are stored as fp16 (what a W4A16 kernel loads), so they are rounded to fp16 here and the
accuracy study sees exactly what a kernel computes. Zero points are stored in `bits` bits.
"""

from __future__ import annotations

import torch

from sparsekit.errors import SparsekitError
from sparsekit.quant.base import PER_CHANNEL, Params, QuantFormat, masked_amax, masked_min_max


def fp16_scale(scale: torch.Tensor) -> torch.Tensor:
    """`scale` rounded to fp16 as stored; a group whose scale is 0 (all zeros) gets 1."""
    s = scale.to(torch.float16).to(torch.float32)
    return torch.where(s > 0, s, torch.ones_like(s))


class IntFormat(QuantFormat):
    """b-bit integer codes with fp16 group scales (and b-bit zero points when asymmetric)."""

    scale_bits = 16

    def __init__(self, bits: int, group_size: int = PER_CHANNEL, symmetric: bool = True) -> None:
        if bits not in (2, 3, 4, 8):
            raise SparsekitError(f"integer formats have 2, 3, 4 or 8 bits, got {bits}")
        self.bits = bits
        self.symmetric = bool(symmetric)
        self.name = f"int{bits}"
        self.element_bits = float(bits)
        self.zero_bits = 0 if symmetric else bits
        super().__init__(group_size)

    def describe(self) -> str:
        return super().describe() + ("" if self.symmetric else " asym")

    @property
    def levels(self) -> int:
        """Largest asymmetric code (2^b - 1)."""
        return 2 ** self.bits - 1

    @property
    def qmax(self) -> int:
        """Largest symmetric code magnitude (2^(b-1) - 1)."""
        return 2 ** (self.bits - 1) - 1

    def params(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> Params:
        if self.symmetric:
            return (fp16_scale(masked_amax(x, keep) / self.qmax),)
        lo, hi = masked_min_max(x, keep)
        scale = fp16_scale((hi - lo) / self.levels)
        zero = torch.round(-lo / scale).clamp(0, self.levels)
        return scale, zero

    def encode(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        if self.symmetric:
            return torch.round(x / params[0]).clamp(-self.qmax, self.qmax).to(torch.int8)
        scale, zero = params
        return (torch.round(x / scale) + zero).clamp(0, self.levels).to(torch.uint8)

    def decode(self, codes: torch.Tensor, params: Params) -> torch.Tensor:
        if self.symmetric:
            return codes.to(torch.float32) * params[0]
        scale, zero = params
        return (codes.to(torch.float32) - zero) * scale
