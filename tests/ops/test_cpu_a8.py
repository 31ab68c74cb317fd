"""The opt-in backend 'cpu_a8': int4, int4 + 2:4, MXFP4 and int8 weights times int8 activation blocks.

The variant's definition is the exact product with x replaced by its Q8_0 blocks (32 inputs, absmax
scale d = max|x| / 127, q = round-half-even(x * 127 / max|x|)), emulated here in torch. Against that
emulation the thresholds are those of the exact kernels (tests/ops/test_cpu_kernels.py): the products
q x code are exact in int32 and every float step is an fp32 rounding of a sum, so 1e-5 relative holds
with ~100 ulps of headroom; bfloat16 outputs add one bf16 rounding (1e-2). Against the exact product
the int8 rounding of x costs at most d/2 per input, about 1/254 of each block's largest |x| (~0.4%
relative for Gaussian data; 2e-2 leaves room for unlucky blocks).
"""

from __future__ import annotations

import os

import pytest
import torch

from sparsekit import _ext
from sparsekit.errors import SparsekitError
from sparsekit.ops.packed_linear import explain, packed_linear, packed_linear_reference, select_kernel
from tests.ops.test_cpu_kernels import _gen, at_threads, make, rel

if not _ext.cpu_available():
    if os.environ.get("SPARSEKIT_REQUIRE_CPU_EXT") == "1":
        raise RuntimeError("sparsekit._cpu is not built but SPARSEKIT_REQUIRE_CPU_EXT=1")
    pytest.skip("sparsekit._cpu not built (no C++ compiler at install time)", allow_module_level=True)

from sparsekit.ops.backends.cpu import cpu_linear, fake_quant_acts  # noqa: E402  (needs the extension)


def q8_blocks(x: torch.Tensor) -> torch.Tensor:
    """x with every block of 32 inputs replaced by d * q: the torch emulation of the variant."""
    m, k = x.shape
    xb = x.float().reshape(m, k // 32, 32)
    amax = xb.abs().amax(-1, keepdim=True)
    # 127 / amax as one division (Python's 127.0 / tensor is a reciprocal then a product: two roundings)
    inv = torch.where(amax > 0, torch.full_like(amax, 127.0).div(amax), torch.zeros_like(amax))
    return (torch.round(xb * inv) * (amax / 127.0)).reshape(m, k)


def test_the_cpp_quantization_is_the_emulated_one_bit_for_bit():
    for seed in range(5):
        x = torch.randn(33, 4096, generator=_gen(seed)) * (seed + 1)
        x[0, :32] = 0.0  # an all-zero block: d = 0, q = 0
        assert torch.equal(fake_quant_acts(x), q8_blocks(x))


# every a8 layout; int4 symmetric and asymmetric; g128 with the short last group at K = 576; groups that are
# not a multiple of 128 (32, 64: the per-group loop), per-channel (one group per row); int4 + 2:4 compiles its
# rows once with and once without zero points, so both run on the flat g128 loop; int8 per channel (K = 576: VNNI,
# four steps of two 64-input chunks and a chunk alone; AVX2, nine steps of two 32-input blocks, its lone last
# block in the smallest shapes below)
CASES = [("int4", {"group": 128}), ("int4", {"group": 32, "symmetric": False}), ("int4", {"group": 64}),
         ("int4", {"group": 576}), ("int4_semi24", {"group": 128}),
         ("int4_semi24", {"group": 128, "symmetric": False}), ("int4_semi24", {"group": 32, "symmetric": False}),
         ("int4_semi24", {"group": 64}), ("mxfp4", {}), ("int8", {})]


@pytest.mark.parametrize("kind, opts", CASES, ids=[f"{k}-{'-'.join(map(str, o.values()))}" for k, o in CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_a8_layout_is_the_exact_product_on_quantized_activations(kind, opts, dtype):
    layout = make(kind, 40, 576, **opts)
    bias = torch.randn(40, generator=_gen(3))
    for m in (1, 2, 3, 7, 16, 33, 128):  # VNNI decode tiles of 1-4 tokens, then the exact kernels on d * q
        x = torch.randn(m, 576, generator=_gen(m)).to(dtype)
        got = packed_linear(x, layout, bias, backend="cpu_a8")
        assert got.dtype == dtype and got.shape == (m, 40)
        want = packed_linear_reference(q8_blocks(x.float()), layout, bias)
        assert rel(got, want) < (1e-5 if dtype == torch.float32 else 1e-2), (m, kind)
        assert rel(got, packed_linear_reference(x, layout, bias)) < 2e-2  # the variant's own error is small


@pytest.mark.parametrize("kind", ["int4", "int4_semi24", "mxfp4", "int8"])
def test_smallest_shapes_and_strided_inputs(kind):
    """K = 32 (one activation block, one chunk shorter than a vector), N = 1, and a strided input."""
    for n, k in ((1, 32), (3, 96), (5, 4096)):
        layout = make(kind, n, k, group=32) if kind not in ("mxfp4", "int8") else make(kind, n, k)
        base = torch.randn(2, 4, 2 * k, generator=_gen(k))
        x = base[..., ::2]
        assert not x.is_contiguous()
        got = packed_linear(x, layout, backend="cpu_a8")
        want = packed_linear_reference(q8_blocks(x.reshape(-1, k)), layout).reshape(2, 4, n)
        assert rel(got, want) < 1e-5


# --- the AVX2 a8 kernels (csrc/cpu/gemm_avx2.cpp: vpmaddubsw + vpmaddwd), forced with path='avx2' --------------
INFO = _ext.cpu_info()
HAS_AVX2 = INFO.get("avx2", False)
HAS_VNNI = INFO.get("a8") == "vnni"
avx2_only = pytest.mark.skipif(not HAS_AVX2, reason="this CPU has no AVX2 path")


def test_cpu_info_names_the_a8_kernels():
    assert INFO["a8"] in ("vnni", "avx2", "none")
    assert (INFO["a8"] == "vnni") == bool(_ext.load_cpu().has_a8())
    assert INFO["a8"] != "none" or not HAS_AVX2


@avx2_only
@pytest.mark.parametrize("kind, opts", CASES, ids=[f"{k}-{'-'.join(map(str, o.values()))}" for k, o in CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_avx2_a8_kernels_are_the_exact_product_on_quantized_activations(kind, opts, dtype):
    """path='avx2' runs the AVX2 integer-dot kernels at 1-16 tokens (tiles of 1-4, then 5 = 4 + 1 ...): the
    emulation's product to fp32 rounding (K = 576: nine chunks of 64, the last group of g128 short; groups of
    32 put two groups in one chunk), the VNNI kernels' result to fp32 rounding, and neither the exact product
    on x (it quantizes) nor bit for bit the exact kernel on d * q (the binding's fallback: another kernel ran)."""
    layout = make(kind, 40, 576, **opts)
    bias = torch.randn(40, generator=_gen(3))
    for m in (1, 2, 3, 4, 5, 7, 8, 16):
        x = torch.randn(m, 576, generator=_gen(50 + m)).to(dtype)
        got = cpu_linear(x, layout, bias, path="avx2", acts="int8")
        assert got.dtype == dtype and got.shape == (m, 40)
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        assert rel(got, packed_linear_reference(q8_blocks(x.float()), layout, bias)) < tol, m
        exact = cpu_linear(x, layout, bias, path="avx2")
        assert 1e-4 < rel(got, exact) < 2e-2, m  # the int8 rounding of x shows, and stays small
        if dtype == torch.float32:
            assert not torch.equal(got, cpu_linear(fake_quant_acts(x), layout, bias, path="avx2")), m
        if HAS_VNNI:
            assert rel(got, cpu_linear(x, layout, bias, path="avx512", acts="int8")) < tol, m


@avx2_only
@pytest.mark.parametrize("kind", ["int4", "int4_semi24", "mxfp4", "int8"])
def test_avx2_a8_kernels_at_the_smallest_shapes_and_strided_inputs(kind):
    """K = 32 (one block: only the half chunk of 32 inputs), K = 96 (a chunk of 64 and a half one), K = 4096;
    N = 1; asymmetric int4; a strided input of 8 tokens (two tiles of 4)."""
    for n, k in ((1, 32), (3, 96), (5, 4096)):
        layout = make(kind, n, k, group=32, symmetric=False) if kind not in ("mxfp4", "int8") else make(kind, n, k)
        x = torch.randn(2, 4, 2 * k, generator=_gen(k))[..., ::2]
        assert not x.is_contiguous()
        got = cpu_linear(x, layout, path="avx2", acts="int8")
        want = packed_linear_reference(q8_blocks(x.reshape(-1, k)), layout).reshape(2, 4, n)
        assert rel(got, want) < 1e-5, (n, k)
        assert not torch.equal(got, cpu_linear(x, layout, path="avx2")), (n, k)
        one = x[1, 2:3]  # one token, strided
        assert rel(cpu_linear(one, layout, path="avx2", acts="int8"), want[1, 2:3]) < 1e-5, (n, k)


@avx2_only
@pytest.mark.parametrize("kind", ["int4", "int4_semi24"])
@pytest.mark.parametrize("k, group", [(160, 128), (224, 128), (256, 128), (640, 256), (96, 96), (352, 352)])
def test_avx2_a8_group_scaled_rows_end_anywhere(kind, k, group):
    """Groups of 128k inputs, or one per row, take the loop that scales each group's sum once (int4: kGroupScale in
    gemm_avx2.cpp; int4 + 2:4: its tiles' loop over groups of 32-input blocks): rows that end 32, 96 or 0 inputs
    past their last pair of 64-input chunks, a last group shorter than the others (640 = 2 x 256 + 128), one group
    per row with and without a pair of chunks; 24 rows (three AVX2 tiles of int4 + 2:4); 1-4 tokens (the token
    tiles); symmetric and with zero points."""
    for symmetric in (True, False):
        layout = make(kind, 24, k, group=group, symmetric=symmetric, seed=k)
        bias = torch.randn(24, generator=_gen(k))
        for m in (1, 2, 3, 4):
            x = torch.randn(m, k, generator=_gen(k + m))
            got = cpu_linear(x, layout, bias, path="avx2", acts="int8")
            want = packed_linear_reference(q8_blocks(x), layout, bias)
            assert rel(got, want) < 1e-5, (symmetric, m)


@avx2_only
@pytest.mark.parametrize("kind", ["int4", "int4_semi24", "mxfp4"])
def test_avx2_a8_kernels_do_not_saturate_at_the_extremes(kind):
    """vpmaddubsw saturates its int16 pair sums: the largest sums the kernels form (int4: codes 15 x q 127,
    8 products per int16 sum of even + odd pairs = 15240 / 2 per pair set; MXFP4: |2 x 6| x sign(w) q, 12 x 127;
    int4 + 2:4: (q + 128) x (c - z) = 255 x +-15, 2 a pair and 4 steps' pairs added: 30600) must come out exact.
    x = +-1 everywhere gives q = +-127."""
    from sparsekit.pack import MXFP4, Int4, Int4Semi24
    from sparsekit.quant.formats import get_format

    n, k = 4, 256
    sign = torch.ones(n, k)
    sign[1::2] = -1.0  # rows of +weights and rows of -weights
    if kind == "mxfp4":
        layout = MXFP4.pack(get_format("mxfp4").quantize(6.0 * sign))  # every code +-6: 2 x E2M1 = +-12
    else:
        w = sign.clone()
        w[:, ::32] = 0.0  # each group spans [0, 1] or [-1, 0]: codes 15 (z 0) or 0 (z 15), weights +-15
        if kind == "int4":
            layout = Int4.pack(get_format("int4", 32, False).quantize(w))
        else:
            mask = torch.zeros(n, k, dtype=torch.bool)
            mask[:, 0::4] = mask[:, 1::4] = True
            layout = Int4Semi24.pack(get_format("int4", 32, False).quantize(w.masked_fill(~mask, 0), mask), mask)
    for x in (torch.ones(2, k), -torch.ones(2, k), torch.ones(2, k) * torch.where(torch.arange(k) % 3 == 0, -1.0, 1.0)):
        want = packed_linear_reference(q8_blocks(x), layout)
        assert want.abs().min() > 0
        assert rel(cpu_linear(x, layout, path="avx2", acts="int8"), want) < 1e-6
        # one token (int4 + 2:4: a block's int16 sums of (q + 128)(c - z), 2 x 255 x 15 a step, 4 steps)
        assert rel(cpu_linear(x[:1], layout, path="avx2", acts="int8"), want[:1]) < 1e-6


@pytest.mark.parametrize("path", ["avx512", "avx2"])
def test_int8_a8_is_exact_at_the_largest_codes(path):
    """Codes +-127 and -128 times q = +-127: the int32 lanes are exact on both kernels (VNNI: (q + 128) w, less
    128 sum w; AVX2: |w| x sign(w) q, int16 pair sums up to 2 x 128 x 127 = 32512, which vpmaddubsw would clamp
    past 32767), so the result is the emulation's to fp32 rounding; 1-4 tokens (the tiles)."""
    from sparsekit.pack.int8 import Int8

    if path == "avx512" and not HAS_VNNI:
        pytest.skip("this CPU has no AVX-512 VNNI")
    if path == "avx2" and not HAS_AVX2:
        pytest.skip("this CPU has no AVX2 path")
    n, k = 4, 256
    codes = torch.full((n, k), 127, dtype=torch.int8)
    codes[1::2] = -128
    codes[2, ::3] = -127
    layout = Int8((n, k), codes, torch.full((n,), 0.01).half())
    for x in (torch.ones(4, k), -torch.ones(4, k), torch.where(torch.arange(k) % 3 == 0, -1.0, 1.0).expand(4, k)):
        want = packed_linear_reference(q8_blocks(x.contiguous()), layout)
        assert want.abs().min() > 0
        for m in (1, 2, 3, 4):
            assert rel(cpu_linear(x[:m], layout, path=path, acts="int8"), want[:m]) < 1e-6, m


def test_auto_never_picks_the_variant_and_explain_lists_it():
    layout = make("int4", 16, 64, group=32)
    x = torch.randn(2, 64)
    assert select_kernel(x, layout).backend == "cpu"
    assert explain(x, layout)["cpu_a8"] == "ok"
    assert "cpu_a8" not in explain(x, make("semi24", 16, 64))  # no such kernel for 2:4 float values


def test_errors_name_the_constraint():
    x = torch.randn(2, 576)
    with pytest.raises(ValueError, match=r"group_size % 32 == 0 is needed, got 48"):
        packed_linear(x, make("int4", 8, 576, group=48), backend="cpu_a8")
    with pytest.raises(ValueError, match=r"in_features % 32 == 0 is needed, got 40"):
        packed_linear(torch.randn(2, 40), make("int4", 8, 40, group=40), backend="cpu_a8")
    with pytest.raises(ValueError, match="the semi24 layout has no cpu_a8 kernel"):
        packed_linear(x, make("semi24", 8, 576), backend="cpu_a8")
    ext = _ext.load_cpu()
    t = make("semi24", 8, 576).tensors()
    with pytest.raises(RuntimeError, match="int8 activations .a8. serve the int4, int4 . 2:4, MXFP4 and int8 layouts"):
        ext.linear(x, 0, 8, 576, values=t["values"], meta=t["meta"], acts="int8")
    with pytest.raises(RuntimeError, match="acts must be 'float' .exact. or 'int8'"):
        cpu_linear(x, make("int4", 8, 576, group=32), acts="int4")


def test_the_ops_cpp_kernel_serves_the_variant(monkeypatch):
    """Through the custom op (what a compiled graph calls), 'cpu_a8' runs in C++ with no Python frame."""
    from sparsekit.ops import packed_linear as pl

    layout = make("int4_semi24", 48, 256, group=128)
    x = torch.randn(3, 256, generator=_gen(8))
    want = cpu_linear(x, layout, acts="int8")

    def python_ran(*args, **kwargs):
        raise RuntimeError("the Python implementation ran")

    monkeypatch.setattr(pl, "_run", python_ran)
    got = torch.ops.sparsekit.packed_linear(x, list(layout.tensors().values()), None, pl.layout_spec(layout), "cpu_a8")
    assert torch.equal(got, want)


def test_set_backend_takes_the_modules_that_have_the_kernel():
    import sparsekit
    from sparsekit.nn import PackedLinear, set_backend
    from tests.tiny import tiny_model

    model = sparsekit.convert(tiny_model("llama", seed=2), [{"quantize": {"format": "int4", "group_size": 32}}],
                              progress=False).model
    packed = [m for m in model.modules() if isinstance(m, PackedLinear)]
    assert set_backend(model, "cpu_a8") == len(packed) > 0
    assert {m.backend for m in packed} == {"cpu_a8"}
    ids = torch.randint(3, 300, (1, 12), generator=_gen(1))
    with torch.no_grad():
        a8 = model(ids).logits
        set_backend(model, "auto")
        exact = model(ids).logits
    assert 0 < rel(a8, exact) < 5e-2
    dense = tiny_model("llama", seed=2)
    with pytest.raises(SparsekitError, match="no packed module of this model has a kernel for it"):
        set_backend(dense, "cpu_a8")
    with pytest.raises(SparsekitError, match="backend must be one of"):
        set_backend(model, "gpu")


@pytest.mark.skipif(not HAS_VNNI, reason="this CPU has no AVX-512 VNNI")
def test_int8_a8_bias_fold_is_exact_when_the_activations_do_not_cancel():
    """vpdpbusd needs one unsigned operand, so one side is biased by 128 and 128 x a sum must come off. With
    activations of one sign (sum q ~ 127 K) and small weights, taking 128 sum q off after the lanes' fp32
    scaling lost the small true sum in the big terms' rounding (0.36% off, this test, measured); taken off
    in the int32 lanes it is exact."""
    from sparsekit.pack.int8 import Int8

    n, k = 8, 14336
    g = _gen(5)
    codes = torch.randint(-2, 3, (n, k), dtype=torch.int8, generator=g)
    layout = Int8((n, k), codes, torch.full((n,), 0.01).half())
    x = 1.0 + 0.01 * torch.rand(1, k, generator=g)
    want = packed_linear_reference(q8_blocks(x), layout)
    assert rel(packed_linear(x, layout, backend="cpu_a8"), want) < 1e-5


# --- int4 + 2:4: the a8 kernels read a copy of the weight, 16 rows interleaved on VNNI (Int4Semi24Tiles), 8 on AVX2
# (Int4Semi24TilesAvx2) ------------------------------------------------------------------------------------------
vnni_only = pytest.mark.skipif(not HAS_VNNI, reason="this CPU has no AVX-512 VNNI")
TILE_PATHS = [pytest.param("avx512", marks=vnni_only), pytest.param("avx2", marks=avx2_only)]


def _every_pair_layout(n: int, k: int, group: int, symmetric: bool):
    """A 2:4 weight whose rows and groups run through all 6 position pairs (every pair in every lane and step of
    a tile, and at each of the 4 slots of a row's step)."""
    from sparsekit.pack import Int4Semi24
    from sparsekit.quant.formats import get_format

    w = torch.randn(n, k, generator=_gen(21)) * 0.1
    pairs = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
    choice = pairs[(torch.arange(n)[:, None] * 5 + torch.arange(k // 4)[None, :]) % 6]  # [n, k / 4, 2]
    mask = torch.zeros(n, k // 4, 4, dtype=torch.bool)
    mask.scatter_(2, choice, True)
    mask = mask.reshape(n, k)
    return Int4Semi24.pack(get_format("int4", group, symmetric).quantize(w.masked_fill(~mask, 0), mask), mask)


@pytest.mark.parametrize("path", TILE_PATHS)
@pytest.mark.parametrize("n", [16, 37])  # whole tiles; whole tiles and a padded last one (VNNI 5 rows, AVX2 5)
@pytest.mark.parametrize("symmetric", [True, False])
def test_int4_semi24_a8_tiles_read_each_kept_position_of_each_row(path, n, symmetric):
    """The tiles' positions drive a vpshufb gather per step: a wrong byte of the reordering (VNNI: the row's place
    in its qword; AVX2: the step's bit pair in a byte, the shift that brings it down; both: the second group's +4)
    would pick another activation for some row."""
    layout = _every_pair_layout(n, 192, 64, symmetric)
    bias = torch.randn(n, generator=_gen(22))
    for m in (1, 4, 5):
        x = torch.randn(m, 192, generator=_gen(23 + m))
        got = cpu_linear(x, layout, bias, path=path, acts="int8")
        assert rel(got, packed_linear_reference(q8_blocks(x), layout, bias)) < 1e-5, m


@pytest.mark.parametrize("path", TILE_PATHS)
def test_int4_semi24_a8_tiles_do_not_overflow_at_the_extremes(path):
    """Weights c - z = +-15 at every kept position and q = +-127: a block's 4 steps of w summed bytewise reach
    +-60 (the 128 sum w term); VNNI's int32 lanes 4 x 255 x 15 a step, AVX2's int16 pair sums 2 x 255 x 15 a step
    and 30600 over a block (vpmaddubsw would clamp past 32767): all must come out exact."""
    from sparsekit.pack import Int4Semi24
    from sparsekit.quant.formats import get_format

    n, k = 32, 256
    sign = torch.ones(n, k)
    sign[1::2] = -1.0
    w = sign.clone()
    w[:, ::32] = 0.0  # each group of 32 spans [0, 1] or [-1, 0]: codes 15 (z 0) or 0 (z 15)
    mask = torch.zeros(n, k, dtype=torch.bool)
    mask[:, 0::4] = mask[:, 1::4] = True
    layout = Int4Semi24.pack(get_format("int4", 32, False).quantize(w.masked_fill(~mask, 0), mask), mask)
    for x in (torch.ones(2, k), -torch.ones(2, k), torch.where(torch.arange(k) % 3 == 0, -1.0, 1.0).expand(2, k)):
        want = packed_linear_reference(q8_blocks(x.contiguous()), layout)
        assert want.abs().min() > 0
        for m in (1, 2):
            assert rel(cpu_linear(x[:m], layout, path=path, acts="int8"), want[:m]) < 1e-6, m


@pytest.mark.parametrize("path", TILE_PATHS)
def test_int4_semi24_a8_tiles_copy_follows_the_weight_and_goes_with_it(path):
    """The reordered copy is built on the first call, used again while the stored tensors are unchanged, rebuilt
    when they change in place (their version counter), dropped by a8_tiles_clear (for writes the counter does not
    see), and released with them."""
    import gc

    ext = _ext.load_cpu()
    gc.collect()
    before = ext.a8_tiles_bytes()
    layout = make("int4_semi24", 40, 576, group=128)
    x = torch.randn(2, 576, generator=_gen(31))
    first = cpu_linear(x, layout, path=path, acts="int8")
    held = ext.a8_tiles_bytes() - before
    # VNNI: 3 tiles x 18 blocks x 192 bytes, and 3 x 5 groups x 16 fp16 scales; AVX2: 5 tiles of 8 rows, 96 bytes
    assert held == (3 * 18 * 192 + 3 * 5 * 16 * 2 if path == "avx512" else 5 * 18 * 96 + 5 * 5 * 8 * 2)
    assert torch.equal(cpu_linear(x, layout, path=path, acts="int8"), first)
    assert ext.a8_tiles_bytes() - before == held  # the same copy, not a second one
    with torch.no_grad():
        layout.scales.mul_(2)  # in place: the same pointer, a new version
    assert rel(cpu_linear(x, layout, path=path, acts="int8"), 2 * first) < 1e-6
    assert ext.a8_tiles_bytes() - before == held  # rebuilt in place of the stale copy
    other = make("int4_semi24", 40, 576, group=128, seed=5)
    assert not torch.equal(cpu_linear(x, other, path=path, acts="int8"), 2 * first)
    with torch.no_grad():
        layout.scales.data.mul_(2)  # through .data: torch's version counter does not see it
    assert rel(cpu_linear(x, layout, path=path, acts="int8"), 2 * first) < 1e-6  # the copy is stale
    ext.a8_tiles_clear()
    assert ext.a8_tiles_bytes() == 0
    assert rel(cpu_linear(x, layout, path=path, acts="int8"), 4 * first) < 1e-6  # rebuilt from the weight as it is now
    assert ext.a8_tiles_bytes() == held  # only the first weight's copy was rebuilt after the clear
    del layout, other
    gc.collect()
    assert ext.a8_tiles_bytes() == 0  # freed with the weight


@pytest.mark.parametrize("path", TILE_PATHS)
def test_int4_semi24_a8_tiles_run_on_inference_tensors(path):
    """Weights made under inference mode keep no version counter: the copy is built and reused all the same."""
    x = torch.randn(2, 576, generator=_gen(32))
    normal = make("int4_semi24", 40, 576, group=128)
    want = cpu_linear(x, normal, path=path, acts="int8")
    with torch.inference_mode():
        layout = make("int4_semi24", 40, 576, group=128)
        assert layout.codes.is_inference()
        assert torch.equal(cpu_linear(x, layout, path=path, acts="int8"), want)
        assert torch.equal(cpu_linear(x, layout, path=path, acts="int8"), want)
    assert torch.equal(cpu_linear(x, layout, path=path, acts="int8"), want)


@pytest.mark.parametrize("path", TILE_PATHS)
def test_int4_semi24_a8_tiles_threads_split_whole_tiles_with_the_same_result(path):
    layout = make("int4_semi24", 76, 1024, group=128)  # VNNI: 4 tiles and 12 rows; AVX2: 9 tiles and 4 rows
    x = torch.randn(3, 1024, generator=_gen(41))
    one, two = (at_threads(t, lambda: cpu_linear(x, layout, path=path, acts="int8")) for t in (1, 2))
    assert torch.equal(one, two)
