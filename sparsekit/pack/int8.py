"""**Int8** (per-channel int8 weights, W8A16 / W8A32): one file, one layout, as docs/ARCHITECTURE.md §12 says.

    codes   `[N, K]`  int8, symmetric (-127..127; the scale maps 127 to the row's largest |w|)
    scales  `[N]`     fp16, one per output channel
    bits/weight = 8 + 16 / K.

The codes are the ones `quantize: {format: int8}` (per channel, its default) computes; pruned weights
are codes of 0. Kernels: the CPU backend (`sparsekit.ops.backends.cpu`) and the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from sparsekit.pack.layouts import CompressedWeight, Layout
from sparsekit.quant.base import QTensor


@dataclass
class Int8(Layout):
    """Per-channel int8 codes + fp16 row scales (module docstring)."""

    KIND: ClassVar[str] = "int8"
    PRIORITY: ClassVar[int] = 20
    codes: torch.Tensor
    scales: torch.Tensor

    @classmethod
    def handles(cls, c: CompressedWeight) -> bool:
        return c.q is not None and c.q.format == "int8"

    @classmethod
    def unfit(cls, c: CompressedWeight) -> str | None:
        if c.q.group_size != 0:
            return f"the int8 layout holds per-channel scales (group_size 0), got group_size {c.q.group_size}"
        if c.q.zeros is not None:
            return "the int8 layout holds symmetric codes (no zero points)"
        return None

    @classmethod
    def from_compressed(cls, c: CompressedWeight, dtype: torch.dtype | None = None) -> "Int8":
        q = c.q
        return cls(c.shape, q.codes.to(torch.int8).contiguous(), q.scales.reshape(-1).to(torch.float16).contiguous())

    def unpack(self) -> torch.Tensor:
        return self.codes.float() * self.scales.float()[:, None]

    def qtensor(self) -> QTensor:
        return QTensor("int8", self.codes, self.scales.float()[:, None], None, 0, (int(self.shape[0]),
                                                                                   int(self.shape[1])))
