"""The mma.sp-order layouts: exact round trips, and the fragment / metadata order checked against an
element-by-element transcription of the PTX ISA tables (independent of the vectorised permutes)."""

import pytest
import torch

from sparsekit.errors import SparsekitError
from sparsekit.pack import LAYOUTS, Int4, Int4Semi24, Int4Semi24MMA, Semi24, Semi24MMA, to_mma
from sparsekit.pack.layouts import unpack_meta, unpack_nibbles
from sparsekit.pack.mma_sp import from_code_words, mma_unfit
from sparsekit.prune.patterns import nm_mask
from sparsekit.quant.integer import IntFormat


def _weight_24(n: int, k: int, dtype=torch.float16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    mask = nm_mask(w.abs(), 2, 4)
    return w.masked_fill(~mask, 0).to(dtype), mask


def _lane_element(nt: int, kt: int, lane: int, i: int) -> tuple[int, int]:
    """(row, compressed column) of element a_i of `lane` in tile (nt, kt): PTX's m16n8k16 A fragment table
    applied to the compressed 16 x 16 tile of sparse m16n8k32."""
    group, tig = lane >> 2, lane % 4
    row = group if (i < 2 or 4 <= i < 6) else group + 8
    col = tig * 2 + (i & 1) + (8 if i >= 4 else 0)
    return nt * 16 + row, kt * 16 + col


@pytest.mark.parametrize("n,k", [(16, 32), (32, 64), (48, 96)])
def test_semi24_fragments_follow_the_ptx_table(n, k):
    w, mask = _weight_24(n, k)
    plain = Semi24.pack(w, mask)
    mma = Semi24MMA.from_semi24(plain)
    assert mma.values.shape == (n // 16, k // 32, 32, 8)
    for nt in range(n // 16):
        for kt in range(k // 32):
            for lane in range(32):
                for i in range(8):
                    r, c = _lane_element(nt, kt, lane, i)
                    assert mma.values[nt, kt, lane, i] == plain.values[r, c]


def test_meta_words_follow_the_ptx_table():
    n, k = 32, 64
    w, mask = _weight_24(n, k, seed=1)
    plain = Semi24.pack(w, mask)
    idx = unpack_meta(plain.meta)                       # [N, K/4, 2] positions
    words = Semi24MMA.from_semi24(plain).meta.to(torch.int64) & 0xFFFFFFFF
    for nt in range(n // 16):
        for kt in range(k // 32):
            for g in range(8):
                for h in range(2):                      # lane 4g + h supplies word 2g + h (selector 0)
                    word = int(words[nt, kt, 2 * g + h])
                    for half, row in ((0, g), (1, g + 8)):
                        for c in range(4):
                            chunk = kt * 8 + h * 4 + c
                            nib = (word >> (16 * half + 4 * c)) & 0xF
                            first, second = idx[nt * 16 + row, chunk].tolist()
                            assert nib == first | (second << 2) and first < second


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_semi24_mma_round_trip(dtype):
    w, mask = _weight_24(64, 128, dtype, seed=2)
    mma = Semi24MMA.pack(w, mask)
    assert torch.equal(mma.unpack(), w)
    assert torch.equal(mma.to_semi24().values, Semi24.pack(w, mask).values)
    assert mma.nbytes == Semi24.pack(w, mask).nbytes  # same bytes, other order


def _int4_semi24(n: int, k: int, group: int, seed: int = 3, symmetric: bool = True) -> Int4Semi24:
    w, mask = _weight_24(n, k, torch.float32, seed)
    q = IntFormat(4, group, symmetric).quantize(w)
    return Int4Semi24.pack(q, mask)


@pytest.mark.parametrize("n,k,group", [(16, 64, 32), (64, 256, 128), (32, 576, 128)])
def test_int4_semi24_mma_round_trip(n, k, group):
    plain = _int4_semi24(n, k, group)
    mma = Int4Semi24MMA.from_int4_semi24(plain)
    assert mma.codes.shape == (n // 16, k // 32, 32) and mma.codes.dtype == torch.int32
    assert torch.equal(mma.unpack(), plain.unpack())
    assert mma.nbytes == plain.nbytes


def test_int4_code_word_nibble_order():
    plain = _int4_semi24(16, 32, 32, seed=4)
    mma = Int4Semi24MMA.from_int4_semi24(plain)
    kept = unpack_nibbles(plain.codes)                  # [N, K/2] code + 8, Semi24 order
    nibbles = from_code_words(mma.codes)                # [N/16, K/32, 32, 8] by fragment element
    for lane in range(32):
        word = int(mma.codes[0, 0, lane]) & 0xFFFFFFFF
        for i in range(8):
            r, c = _lane_element(0, 0, lane, i)
            # the pair (a_2j, a_2j+1) sits in nibbles j and j + 4 (one 0x000F000F mask per fp16x2)
            pos = i // 2 + 4 * (i % 2)
            assert (word >> (4 * pos)) & 0xF == kept[r, c] == nibbles[0, 0, lane, i]


def test_mma_layouts_are_registered_for_modules_and_checkpoints():
    assert LAYOUTS["semi24_mma"] is Semi24MMA and LAYOUTS["int4_semi24_mma"] is Int4Semi24MMA


def test_mma_layout_constraints_are_explained():
    w, mask = _weight_24(24, 64)
    with pytest.raises(SparsekitError, match="out_features % 16"):
        Semi24MMA.pack(w, mask)
    asym = _int4_semi24(16, 64, 32, symmetric=False)
    with pytest.raises(SparsekitError, match="symmetric"):
        Int4Semi24MMA.from_int4_semi24(asym)
    assert "symmetric" in mma_unfit(asym)
    assert "in_features % 64" in mma_unfit(Semi24.pack(*_weight_24(16, 32)))
    assert mma_unfit(Semi24.pack(*_weight_24(16, 64))) is None
    with pytest.raises(SparsekitError, match="no mma.sp layout"):
        to_mma(Int4.pack(IntFormat(4, 32, True).quantize(torch.randn(16, 64))))

