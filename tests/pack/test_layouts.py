"""Packed layouts: exact round trips, the byte counts the formats promise, and clear errors."""

import pytest
import torch

from sparsekit.errors import SparsekitError
from sparsekit.pack.layouts import (MXFP4, Int4, Int4Semi24, Semi24, pack_nibbles, to_torch_semi_structured,
                                    unpack_meta, unpack_nibbles)
from sparsekit.prune.patterns import nm_mask
from sparsekit.quant import IntFormat, get_format


def _w(n=24, k=256, seed=0, dtype=torch.float32):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _mask24(w, seed=1):
    return nm_mask(torch.rand(w.shape, generator=torch.Generator().manual_seed(seed)), 2, 4)


def test_nibbles_round_trip():
    codes = torch.randint(0, 16, (5, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    packed = pack_nibbles(codes)
    assert packed.shape == (5, 32) and torch.equal(unpack_nibbles(packed), codes)
    assert int(packed[0, 0]) == int(codes[0, 0]) | (int(codes[0, 1]) << 4)  # input 2i low, 2i+1 high


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_semi24_round_trip_and_bits(dtype):
    w = _w(dtype=dtype)
    mask = _mask24(w)
    w = w.masked_fill(~mask, 0)
    p = Semi24.pack(w, mask)
    assert p.values.shape == (24, 128) and p.meta.shape == (24, 32) and p.meta.dtype == torch.uint8
    assert torch.equal(p.unpack(), w) and torch.equal(p.mask(), mask)
    assert p.bits_per_weight == pytest.approx(0.5 * (torch.finfo(dtype).bits + 2))  # fp16: 9 bits
    idx = unpack_meta(p.meta)
    assert bool((idx[..., 0] < idx[..., 1]).all())


def test_semi24_keeps_explicit_zeros_of_the_mask():
    w = torch.zeros(2, 8)
    mask = torch.tensor([[1, 1, 0, 0, 0, 0, 1, 1], [0, 1, 0, 1, 1, 0, 1, 0]], dtype=torch.bool)
    p = Semi24.pack(w, mask)  # kept values may be 0; the positions still come from the mask
    assert torch.equal(p.mask(), mask)
    assert p.meta.tolist() == [[(0 | 1 << 2) | ((2 | 3 << 2) << 4)], [(1 | 3 << 2) | ((0 | 2 << 2) << 4)]]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_semi24_default_mask_packs_kept_zeros(dtype):
    """Without a mask, a 2:4 weight whose kept values are exactly 0 (pruned-then-quantized to 0, one-hot
    probes) packs: each group keeps its 2 largest |w|, ties to the lower input."""
    w = _w(n=16, k=64, dtype=dtype)
    mask = _mask24(w)
    w = w.masked_fill(~mask, 0)
    w[0, :8] = 0                       # two whole groups of zeros
    w[1, 4:8] = torch.tensor([0, 0, 0, -3], dtype=dtype)  # one non-zero, the other kept slot is a zero
    w[2, :4] = torch.tensor([0, 2, 0, 0], dtype=dtype)
    w[3, :] = 0                        # a whole zero row
    p = Semi24.pack(w)
    assert torch.equal(p.unpack(), w)
    assert unpack_meta(p.meta)[0, :2].tolist() == [[0, 1], [0, 1]]  # all-zero groups: the lowest positions
    assert unpack_meta(p.meta)[1, 1].tolist() == [0, 3] and unpack_meta(p.meta)[2, 0].tolist() == [0, 1]
    full = torch.ones_like(mask)
    full[0, :8] = full[1, 4:8] = full[2, :4] = full[3, :] = False  # rows whose mask the test changed
    assert torch.equal(p.mask() & full, mask & full)  # every fully populated group keeps its own non-zeros
    one_hot = torch.zeros(16, 64, dtype=dtype)
    one_hot[5, 37] = 1
    assert torch.equal(Semi24.pack(one_hot).unpack(), one_hot)


def test_semi24_default_mask_keeps_the_two_largest_magnitudes():
    w = torch.tensor([[0.5, 0, -2, 0, 0, 0, 0, 0]])
    p = Semi24.pack(w)
    assert unpack_meta(p.meta)[0].tolist() == [[0, 2], [0, 1]] and torch.equal(p.unpack(), w)
    with pytest.raises(SparsekitError, match="q_proj: not 2:4 sparse: row 1, inputs 4..7 hold 3 non-zeros"):
        Semi24.pack(torch.tensor([[1.0, 1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, -1, 1, 0]]), name="q_proj")


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("k, group", [(256, 128), (576, 128), (64, 0)])
def test_int4_round_trip(symmetric, k, group):
    w = _w(k=k)
    fmt = IntFormat(4, group, symmetric)
    q = fmt.quantize(w)
    p = Int4.pack(q)
    assert p.codes.shape == (24, k // 2) and p.scales.dtype == torch.float16
    assert torch.equal(p.unpack(), fmt.dequantize(q))
    if (k, group, symmetric) == (256, 128, True):
        assert p.bits_per_weight == pytest.approx(4.125)


@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_semi24_round_trip_and_bits(symmetric):
    from sparsekit.calib.stats import LinearStats, accumulate
    from sparsekit.quant import sparsegpt_gptq

    w = _w(k=256)
    stats = accumulate(LinearStats.empty(256, hessian=True), torch.randn(512, 256))
    fmt = IntFormat(4, 128, symmetric)
    new, keep, q = sparsegpt_gptq(w, stats.xtx, fmt, pattern="2:4")
    p = Int4Semi24.pack(q, keep)
    assert p.codes.shape == (24, 64) and p.meta.shape == (24, 32)
    assert torch.equal(p.unpack(), new) and torch.equal(p.mask(), keep)
    if symmetric:
        assert p.bits_per_weight == pytest.approx(3.125)


def test_mxfp4_round_trip_and_bits():
    w = _w(k=256)
    fmt = get_format("mxfp4")
    q = fmt.quantize(w)
    p = MXFP4.pack(q)
    assert p.scales.dtype == torch.uint8 and p.scales.shape == (24, 8)
    assert torch.equal(p.unpack(), fmt.dequantize(q))
    assert p.bits_per_weight == pytest.approx(4.25)


def test_errors_name_the_constraint():
    w = _w(k=256)
    with pytest.raises(SparsekitError, match="exactly 2 kept entries in every group of 4"):
        Semi24.pack(w, w != 0)  # dense mask: not 2:4
    with pytest.raises(SparsekitError, match="up_proj: not 2:4 sparse: row 0, inputs 0..3 hold 4 non-zeros"):
        Semi24.pack(w, name="model.layers.0.mlp.up_proj")  # dense weight, no mask
    with pytest.raises(SparsekitError, match="in_features=12 must be a multiple of 8"):
        Semi24.pack(torch.zeros(2, 12))
    with pytest.raises(SparsekitError, match="float16/bfloat16/float32"):
        Semi24.pack(torch.zeros(2, 8, dtype=torch.int8))
    with pytest.raises(SparsekitError, match="pack int4 codes, got format 'int8'"):
        Int4.pack(IntFormat(8).quantize(w))
    with pytest.raises(SparsekitError, match="packs mxfp4 codes"):
        MXFP4.pack(IntFormat(4, 32).quantize(w))
    with pytest.raises(SparsekitError, match="per-tensor scales: the packed int4 layouts need per-channel or group scales"):
        Int4.pack(IntFormat(4, -1).quantize(w))
    with pytest.raises(SparsekitError, match="CUDA devices"):
        to_torch_semi_structured(w.half())


# --- qtensor(): the codes an exporter writes (their decoding is the layout's unpack, exactly) ------------------
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("sparse", [False, True])
def test_int4_qtensor_decodes_to_unpack(symmetric: bool, sparse: bool) -> None:
    from sparsekit.pack.layouts import Int4, Int4Semi24
    from sparsekit.prune.patterns import nm_mask
    from sparsekit.quant.formats import get_format

    torch.manual_seed(3)
    w = torch.randn(32, 576)  # K = 576 at g128: a short last group
    fmt = get_format("int4", 128, symmetric)
    mask = nm_mask(w.abs(), 2, 4) if sparse else None
    q = fmt.quantize(w if mask is None else w * mask, mask)
    layout = Int4Semi24.pack(q, mask) if sparse else Int4.pack(q)
    back = layout.qtensor()
    assert back.format == "int4" and back.shape == (32, 576) and back.group_size == 128
    assert (back.zeros is None) == symmetric
    assert torch.equal(fmt.dequantize(back), layout.unpack())
    if sparse:  # pruned positions decode to exactly 0
        assert bool((fmt.dequantize(back)[~mask] == 0).all())


def test_int8_mxfp4_qtensor_and_float_layouts() -> None:
    from sparsekit.pack.int8 import Int8
    from sparsekit.pack.layouts import MXFP4, CompressedWeight, Semi24
    from sparsekit.prune.patterns import nm_mask
    from sparsekit.quant.formats import get_format

    torch.manual_seed(4)
    w = torch.randn(16, 64)
    for name, cls, group in (("int8", Int8, 0), ("mxfp4", MXFP4, 32)):
        fmt = get_format(name, group) if name == "int8" else get_format(name)
        q = fmt.quantize(w)
        layout = cls.from_compressed(CompressedWeight(w, None, q, "w"))
        assert torch.equal(fmt.dequantize(layout.qtensor()), layout.unpack()), name
    mask = nm_mask(w.abs(), 2, 4)
    assert Semi24.pack(w * mask, mask).qtensor() is None  # floating values: nothing to re-encode
