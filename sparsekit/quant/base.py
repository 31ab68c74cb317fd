"""The contract every weight format follows, and the group-wise machinery they share.

A format quantizes a `[out_features, in_features]` weight in *groups* of consecutive inputs along
the reduction dimension K (the layout a dequantize-GEMM streams: one scale is loaded per group of K
values of a row). Group sizes: `g > 0` elements, or `PER_CHANNEL` (one group per output row), or
`PER_TENSOR` (the whole matrix shares one scale, as BitNet's absmean).

A format implements three pure functions over groups laid out as the rows of a 2-D tensor `x`
(`[groups, g]`), with an optional keep-mask of the same shape:

- `params(x, keep)`  -> tuple of `[groups, 1]` tensors (scale, and zero point when asymmetric);
  only kept entries are looked at, so a pruned layer's zeros do not widen its range;
- `encode(x, params)` -> integer codes, one per element;
- `decode(codes, params)` -> the values on the format's grid (fp32).

`quantize()` / `dequantize()` below reshape a weight into groups and call them; `fake_quantize()`
is decode(encode(.)) — what GPTQ and the accuracy study need. Pruned weights (keep == False) always
dequantize to exactly 0: every format here can represent 0 exactly, and the result is re-masked.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from sparsekit.errors import SparsekitError

PER_CHANNEL = 0
PER_TENSOR = -1

Params = tuple[torch.Tensor, ...]


@dataclass
class QTensor:
    """Codes and scales of one quantized weight.

    codes:  `[out, in]` integer codes (unpacked: one element per code; `sparsekit.pack` packs them).
    scales: `[out, in / group]` fp32 (power-of-two values for MX formats; stored as E8M0 exponents).
    zeros:  `[out, in / group]` integer zero points of asymmetric formats, else None.
    """

    format: str
    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    group_size: int
    shape: tuple[int, int]

    def cpu(self) -> "QTensor":
        """A copy whose tensors live on the CPU (what steps keep for packing)."""
        return QTensor(self.format, self.codes.cpu(), self.scales.cpu(),
                       None if self.zeros is None else self.zeros.cpu(), self.group_size, self.shape)


class QuantFormat(ABC):
    """A weight format: element encoding + how scales are shared and stored."""

    #: registry name, e.g. 'int4', 'mxfp4'
    name: str = ""
    #: bits of one element code
    element_bits: float = 0.0
    #: bits of one stored scale, and of one stored zero point (0 when symmetric)
    scale_bits: int = 16
    zero_bits: int = 0

    def __init__(self, group_size: int = PER_CHANNEL) -> None:
        if group_size < PER_TENSOR:
            raise SparsekitError(f"{self.name}: group_size must be > 0, {PER_CHANNEL} (per output channel) or "
                                 f"{PER_TENSOR} (per tensor), got {group_size}")
        self.group_size = int(group_size)

    # --- the three pure functions a format defines -------------------------------------------------
    @abstractmethod
    def params(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> Params:
        """Scale (and zero point) of each row of `x` (`[groups, g]`), from its kept entries."""

    @abstractmethod
    def encode(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """Integer codes of `x` (`[groups, c]`) under `params` (`[groups, 1]` each)."""

    @abstractmethod
    def decode(self, codes: torch.Tensor, params: Params) -> torch.Tensor:
        """Values (fp32) of `codes` under `params`."""

    # --- shared machinery ----------------------------------------------------------------------------
    def fake(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """decode(encode(x)): `x` moved onto the grid that `params` define."""
        return self.decode(self.encode(x, params), params)

    def describe(self) -> str:
        g = {PER_CHANNEL: "per-channel", PER_TENSOR: "per-tensor"}.get(self.group_size, f"g{self.group_size}")
        return f"{self.name} {g}"

    def group_width(self, in_features: int, out_features: int = 1) -> int:
        """Elements per group for a weight with `in_features` inputs. When the group size does not
        divide K, the last group of each row is shorter (SmolLM2's K = 576 is 4.5 groups of 128, as
        AutoGPTQ and llama.cpp also allow); kernels that need whole groups check this when packing."""
        if self.group_size == PER_CHANNEL:
            return in_features
        if self.group_size == PER_TENSOR:
            return in_features * out_features
        return self.group_size

    def params_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """Shape of the stored scales (and zeros) of a `[out, in]` weight."""
        rows, cols = shape
        if self.group_size == PER_TENSOR:
            return (1, 1)
        return (rows, -(-cols // self.group_width(cols)))

    def bits_per_weight(self, shape: tuple[int, int]) -> float:
        """True storage per weight of a dense `[out, in]` matrix: codes plus scales and zero points."""
        groups = math.prod(self.params_shape(shape))
        return self.element_bits + groups * (self.scale_bits + self.zero_bits) / math.prod(shape)

    def _groups(self, w: torch.Tensor, keep: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """`w` as one row per group (a short last group is padded with entries that are not kept)
        and the matching keep-mask; also the group width."""
        if w.dim() != 2:
            raise SparsekitError(f"{self.name}: expected a 2-D [out_features, in_features] weight, got "
                                 f"{tuple(w.shape)}")
        rows, cols = w.shape
        g = self.group_width(cols, rows)
        pad = -cols % g if self.group_size > 0 else 0
        if pad:
            keep = torch.ones_like(w, dtype=torch.bool) if keep is None else keep
            w = torch.nn.functional.pad(w, (0, pad))
            keep = torch.nn.functional.pad(keep.to(torch.uint8), (0, pad)).bool()
        return w.reshape(-1, g), None if keep is None else keep.reshape(-1, g), g

    def check_finite(self, w: torch.Tensor, name: str = "weight") -> None:
        if not bool(torch.isfinite(w).all()):
            bad = int((~torch.isfinite(w)).sum())
            raise SparsekitError(f"{name}: {bad} NaN/Inf value(s) in the weight; {self.name} cannot quantize "
                                 "them (check the model or the step that produced this weight)")

    @torch.no_grad()
    def quantize(self, w: torch.Tensor, keep: torch.Tensor | None = None, *, name: str = "weight") -> QTensor:
        """Codes and scales of `w`; with a keep-mask, scales come from kept weights only."""
        self.check_finite(w, name)
        _, k, _ = self._groups(w.detach().float(), keep)
        x, _, _ = self._groups(w.detach().float())
        return self.qtensor(w, keep, self.params(x, k))

    def qtensor(self, w: torch.Tensor, keep: torch.Tensor | None, params: Params) -> QTensor:
        """Encode `w` with given group `params` (one row per group, row-major); pruned -> code of 0."""
        x, k, _ = self._groups(w.detach().float(), keep)
        if k is not None:  # pruned entries encode as 0: their (ignored) values may lie far off the grid
            x = torch.where(k, x, torch.zeros_like(x))
        rows, cols = w.shape
        codes = self.encode(x, params).reshape(rows, -1)[:, :cols]
        pshape = self.params_shape((rows, cols))
        return QTensor(self.name, codes, params[0].reshape(pshape),
                       params[1].reshape(pshape) if len(params) > 1 else None, self.group_size, (rows, cols))

    def dequantize(self, q: QTensor) -> torch.Tensor:
        """fp32 values of a `QTensor` of this format."""
        rows, cols = q.shape
        g = self.group_width(cols, rows)
        pad = -cols % g if self.group_size > 0 else 0
        codes = torch.nn.functional.pad(q.codes, (0, pad)) if pad else q.codes
        params = (q.scales.reshape(-1, 1),) + (() if q.zeros is None else (q.zeros.reshape(-1, 1),))
        return self.decode(codes.reshape(-1, g), params).reshape(rows, -1)[:, :cols]

    @torch.no_grad()
    def fake_quantize(self, w: torch.Tensor, keep: torch.Tensor | None = None, *, name: str = "weight"
                      ) -> torch.Tensor:
        """Round-to-nearest quantize -> dequantize, in `w`'s dtype; pruned entries stay exactly 0."""
        return remask(self.dequantize(self.quantize(w, keep, name=name)), keep, w.dtype)


def remask(values: torch.Tensor, keep: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Dequantized `values` with pruned entries forced to exactly 0, cast to the weight's dtype."""
    return (values if keep is None else values.masked_fill(~keep, 0.0)).to(dtype)


def masked_amax(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """max |x| per row over kept entries (`[rows, 1]`; 0 for a row with nothing kept)."""
    a = x.abs()
    if keep is not None:
        a = a.masked_fill(~keep, 0.0)
    return a.amax(dim=1, keepdim=True)


def masked_min_max(x: torch.Tensor, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row min and max over kept entries, widened to include 0 (so that 0 is on the grid)."""
    if keep is None:
        lo, hi = x.amin(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
    else:
        lo = x.masked_fill(~keep, math.inf).amin(dim=1, keepdim=True)
        hi = x.masked_fill(~keep, -math.inf).amax(dim=1, keepdim=True)
    return lo.clamp(max=0.0), hi.clamp(min=0.0)
