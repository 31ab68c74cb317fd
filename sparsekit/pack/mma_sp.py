"""2:4 layouts in the register order of the sparse tensor cores (`mma.sp ... m16n8k32`), read by csrc/.

The CUDA kernels (csrc/sparse24_gemm.cu) make W the sparse A operand of `mma.sp.m16n8k32`: a 16 x 32
tile of W (16 output features x 32 inputs; 16 kept values per row) is one instruction. Each of the 32
lanes of a warp must hold a fixed part of that tile in registers; these layouts store every tile in
exactly that order, so a lane fetches its share with one coalesced load (no shuffles, no index math).

Fragment of lane `4g + t` (PTX ISA, "Matrix fragments for sparse mma.m16n8k32 with .f16/.bf16": the
compressed 16 x 16 A tile is distributed as the dense m16n8k16 A fragment), elements a0..a7:

    a0 a1: row g,     kept values of chunk t      (inputs 4t .. 4t+3 of the tile)
    a2 a3: row g + 8, kept values of chunk t
    a4 a5: row g,     kept values of chunk t + 4  (inputs 16 + 4t .. 16 + 4t + 3)
    a6 a7: row g + 8, kept values of chunk t + 4

Metadata (sparsity selector 0: lanes 4g and 4g + 1 supply it): word `2g + h` holds, for chunks
4h .. 4h + 3 of the tile, row g in bits 0-15 and row g + 8 in bits 16-31, four bits per chunk
(bits 0-1: position of the first kept value, bits 2-3: of the second; ascending, as
`mma.sp::ordered_metadata` requires).

**Semi24MMA** (fp16/bf16 values; 9 bits/weight for 16-bit values, as `Semi24`)
    values `[N/16, K/32, 32, 8]`  lane-major fragments of each (row tile, k tile), k tiles contiguous
    meta   `[N/16, K/32, 16]`     int32 words as above

**Int4Semi24MMA** (symmetric int4 codes of the kept values + fp16 group scales; 3.125 bits at g128)
    codes  `[N/16, K/32, 32]`     int32; lane's a_i (code + 8) in nibble `i // 2 + 4 * (i % 2)`, so that the
                                  pair (a_2j, a_2j+1) sits in nibbles j and j + 4: one mask of the word
                                  shifted by 4j yields both halves of an fp16x2 register (csrc dequant)
    meta   as Semi24MMA;  scales `[N, ceil(K / group)]` fp16 as `Int4Semi24`

Constraints: N % 16 == 0, K % 32 == 0 (the kernels also need K % 64 == 0), group % 32 == 0 so that an
mma k-step never straddles two scale groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from sparsekit.errors import SparsekitError
from sparsekit.pack.layouts import Int4Semi24, Layout, Semi24, pack_nibbles, twin_of, unpack_nibbles
from sparsekit.quant.base import QTensor

TILE_N, TILE_K = 16, 32


def _check_tiles(name: str, shape: tuple[int, int]) -> tuple[int, int]:
    n, k = shape
    if n % TILE_N or k % TILE_K:
        raise SparsekitError(f"{name}: the mma.sp layouts need out_features % {TILE_N} == 0 and in_features % "
                             f"{TILE_K} == 0 (one m16n8k32 tile per fragment), got {n} x {k}")
    return n, k


def _int32_bits(words: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2^32) -> int32 tensors with the same bit pattern (torch has no uint32 math)."""
    return torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32).contiguous()


def to_fragments(compressed: torch.Tensor) -> torch.Tensor:
    """`[N, K/2]` kept entries (2 per chunk of 4, chunk order) -> `[N/16, K/32, 32, 8]` lane fragments."""
    n, half = compressed.shape
    # rows n = 16 nt + 8 rh + g; compressed columns c = 16 kt + 8 ch + 2 t + s
    v = compressed.reshape(n // 16, 2, 8, half // 16, 2, 4, 2)        # nt rh g kt ch t s
    # a_i with i = 4 ch + 2 rh + s, lane = 4 g + t
    return v.permute(0, 3, 2, 5, 4, 1, 6).reshape(n // 16, half // 16, 32, 8).contiguous()


def from_fragments(frag: torch.Tensor) -> torch.Tensor:
    """Inverse of `to_fragments`."""
    nt, kt = frag.shape[:2]
    v = frag.reshape(nt, kt, 8, 4, 2, 2, 2)                            # nt kt g t ch rh s
    return v.permute(0, 5, 2, 1, 4, 3, 6).reshape(nt * 16, kt * 16)


def to_meta_words(meta: torch.Tensor) -> torch.Tensor:
    """`Semi24.meta` `[N, K/8]` (a nibble per chunk) -> `[N/16, K/32, 16]` int32 mma.sp metadata words."""
    n = meta.shape[0]
    nib = unpack_nibbles(meta).to(torch.int64)                         # [N, K/4]
    chunks = nib.shape[1]
    nib = nib.reshape(n // 16, 2, 8, chunks // 8, 2, 4)                # nt rh g kt h c
    shift = 4 * torch.arange(4, device=meta.device) + 16 * torch.arange(2, device=meta.device)[:, None]
    words = (nib.permute(0, 3, 2, 4, 1, 5) << shift).sum(dim=(-2, -1))  # nt kt g h
    return _int32_bits(words.reshape(n // 16, chunks // 8, 16))


def from_meta_words(words: torch.Tensor) -> torch.Tensor:
    """Inverse of `to_meta_words`: `[N/16, K/32, 16]` int32 -> `[N, K/8]` uint8 nibble metadata."""
    nt, kt = words.shape[:2]
    w = words.to(torch.int64) & 0xFFFFFFFF
    shift = 4 * torch.arange(4, device=words.device) + 16 * torch.arange(2, device=words.device)[:, None]
    nib = (w.reshape(nt, kt, 8, 2, 1, 1) >> shift) & 0xF                # nt kt g h rh c
    nib = nib.permute(0, 4, 2, 1, 3, 5).reshape(nt * 16, kt * 8)       # rows (nt rh g), chunks (kt h c)
    return pack_nibbles(nib.to(torch.uint8))


# nibble position of fragment element i: pairs (a_2j, a_2j+1) in nibbles (j, j + 4)
_NIBBLE_OF = torch.tensor([0, 4, 1, 5, 2, 6, 3, 7])


def to_code_words(frag: torch.Tensor) -> torch.Tensor:
    """`[..., 8]` nibbles (0..15) of fragment elements a0..a7 -> `[...]` int32 words (see module docstring)."""
    shift = 4 * _NIBBLE_OF.to(frag.device)
    return _int32_bits((frag.to(torch.int64) << shift).sum(dim=-1))


def from_code_words(words: torch.Tensor) -> torch.Tensor:
    """Inverse of `to_code_words`."""
    shift = 4 * _NIBBLE_OF.to(words.device)
    return ((words.to(torch.int64)[..., None] & 0xFFFFFFFF) >> shift) & 0xF


@dataclass
class Semi24MMA(Layout):
    """2:4 values + metadata in mma.sp fragment order (module docstring)."""

    KIND: ClassVar[str] = "semi24_mma"
    REORDERS: ClassVar[type[Layout]] = Semi24
    values: torch.Tensor
    meta: torch.Tensor

    @classmethod
    def reorder_unfit(cls, base: Layout) -> str | None:
        why = _tiles_unfit(base)
        if why is None and base.values.dtype not in (torch.float16, torch.bfloat16):
            why = f"the sparse tensor cores take float16/bfloat16 values, got {base.values.dtype}"
        return why

    @classmethod
    def from_base(cls, base: Layout, name: str = "weight") -> "Semi24MMA":
        return cls.from_semi24(base, name)

    @classmethod
    def from_semi24(cls, layout: Semi24, name: str = "weight") -> "Semi24MMA":
        _check_tiles(name, layout.shape)
        return cls(layout.shape, to_fragments(layout.values), to_meta_words(layout.meta))

    @classmethod
    def pack(cls, weight: torch.Tensor, mask: torch.Tensor | None = None, name: str = "weight") -> "Semi24MMA":
        _check_tiles(name, tuple(weight.shape))
        return cls.from_semi24(Semi24.pack(weight, mask, name), name)

    def to_semi24(self) -> Semi24:
        return Semi24(self.shape, from_fragments(self.values), from_meta_words(self.meta))

    def unpack(self) -> torch.Tensor:
        return self.to_semi24().unpack()


@dataclass
class Int4Semi24MMA(Layout):
    """Symmetric int4 codes of the kept 2:4 values in mma.sp order + metadata + fp16 group scales."""

    KIND: ClassVar[str] = "int4_semi24_mma"
    ATTRS: ClassVar[tuple[str, ...]] = ("group_size",)
    REORDERS: ClassVar[type[Layout]] = Int4Semi24
    codes: torch.Tensor
    meta: torch.Tensor
    scales: torch.Tensor
    group_size: int

    @classmethod
    def reorder_unfit(cls, base: Layout) -> str | None:
        why = _tiles_unfit(base)
        if why is None and (base.zeros is not None or base.group_size % TILE_K):
            why = "the int4 mma.sp layout needs symmetric codes and group_size % 32 == 0"
        return why

    @classmethod
    def from_base(cls, base: Layout, name: str = "weight") -> "Int4Semi24MMA":
        return cls.from_int4_semi24(base, name)

    @classmethod
    def from_int4_semi24(cls, layout: Int4Semi24, name: str = "weight") -> "Int4Semi24MMA":
        n, k = _check_tiles(name, layout.shape)
        if layout.zeros is not None:
            raise SparsekitError(f"{name}: the mma.sp int4 layout takes symmetric codes (no zero points); quantize "
                                 "with symmetric=True or keep the Int4Semi24 layout")
        if layout.group_size % TILE_K:
            raise SparsekitError(f"{name}: group_size must be a multiple of {TILE_K} (one scale per mma k-step), "
                                 f"got {layout.group_size}")
        kept = unpack_nibbles(layout.codes)                             # [N, K/2] code + 8, Semi24 order
        return cls(layout.shape, to_code_words(to_fragments(kept)), to_meta_words(layout.meta),
                   layout.scales.contiguous(), layout.group_size)

    def to_int4_semi24(self) -> Int4Semi24:
        kept = from_fragments(from_code_words(self.codes)).to(torch.uint8)
        return Int4Semi24(self.shape, pack_nibbles(kept), from_meta_words(self.meta), self.scales, None,
                          self.group_size)

    def unpack(self) -> torch.Tensor:
        return self.to_int4_semi24().unpack()

    def qtensor(self) -> QTensor:
        return self.to_int4_semi24().qtensor()


def _tiles_unfit(layout: Layout) -> str | None:
    n, k = layout.shape
    if n % TILE_N or k % 64:
        return f"the sparse tensor-core kernels need out_features % 16 == 0 and in_features % 64 == 0, got {n} x {k}"
    return None


def mma_unfit(layout: Layout) -> str | None:
    """Why the CUDA kernels cannot read this layout in mma.sp order (None: they can)."""
    twin = twin_of(type(layout))
    if twin is None:
        return f"{layout.KIND} has no mma.sp layout"
    return twin.reorder_unfit(layout)


def to_mma(layout: Layout, name: str = "weight") -> Layout:
    """The mma.sp-order twin of a `Semi24` / `Int4Semi24` layout (what the CUDA kernels read)."""
    twin = twin_of(type(layout))
    if twin is None:
        raise SparsekitError(f"{name}: no mma.sp layout for {layout.KIND} (only semi24 and int4_semi24)")
    return twin.from_base(layout, name)


__all__ = ["Int4Semi24MMA", "Semi24MMA", "from_fragments", "from_meta_words", "to_fragments",
           "to_meta_words", "mma_unfit", "to_mma"]
