"""The CPU kernels of sparsekit._cpu (csrc/cpu/) against the reference, for every layout.

Thresholds from the arithmetic: both sides accumulate the same fp32 products, the kernel in another
order (16-lane partial sums, groups, the int4 zero point folded out of the loop), so float32 inputs
agree to a few fp32 roundings of the sum: 1e-5 relative is ~100 ulps of headroom. bfloat16 inputs are
widened to fp32 exactly on both sides and only the final cast rounds (8 bits: 2^-8 relative), so the
output may differ by one bf16 rounding: 1e-2.

CI builds the extension; there `SPARSEKIT_REQUIRE_CPU_EXT=1` (scripts/test.sh) turns a missing build
into a failure instead of a skip.
"""

from __future__ import annotations

import os

import pytest
import torch

from sparsekit import _ext
from sparsekit.ops.backends.cpu import cpu_linear
from sparsekit.ops.packed_linear import packed_linear, packed_linear_reference, select_kernel
from sparsekit.pack import MXFP4, Int4, Int4Semi24, Int8, Semi24
from sparsekit.prune.patterns import nm_mask
from sparsekit.quant.formats import get_format

if not _ext.cpu_available():
    if os.environ.get("SPARSEKIT_REQUIRE_CPU_EXT") == "1":
        raise RuntimeError("sparsekit._cpu is not built but SPARSEKIT_REQUIRE_CPU_EXT=1")
    pytest.skip("sparsekit._cpu not built (no C++ compiler at install time)", allow_module_level=True)

INFO = _ext.cpu_info()
HAS_AVX2 = INFO.get("avx2", False)
PATHS = ["scalar"] + (["avx512"] if INFO.get("avx512") else []) + (["avx2"] if HAS_AVX2 else [])
SIMD_PATHS = [p for p in PATHS if p != "scalar"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make(kind: str, n: int, k: int, *, group: int = 32, symmetric: bool = True, values=torch.float32, seed: int = 0):
    """A layout of fresh random weights (never zeros or ones)."""
    w = torch.randn(n, k, generator=_gen(seed)) * 0.1
    mask = nm_mask(torch.rand(n, k, generator=_gen(seed + 1)), 2, 4) if k % 4 == 0 else None
    if kind == "semi24":
        return Semi24.pack(w.masked_fill(~mask, 0).to(values), mask)
    if kind == "int4":
        return Int4.pack(get_format("int4", group, symmetric).quantize(w))
    if kind == "int4_semi24":
        return Int4Semi24.pack(get_format("int4", group, symmetric).quantize(w.masked_fill(~mask, 0), mask), mask)
    if kind == "mxfp4":
        return MXFP4.pack(get_format("mxfp4").quantize(w))
    if kind == "int8":
        q = get_format("int8").quantize(w)
        return Int8(q.shape, q.codes.to(torch.int8), q.scales.reshape(-1).half())
    raise AssertionError(kind)


def at_threads(threads: int, fn):
    """fn() with torch set to `threads` intra-op threads (restored after)."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        return fn()
    finally:
        torch.set_num_threads(before)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def rel_to_products(got: torch.Tensor, ref: torch.Tensor, x: torch.Tensor, layout) -> float:
    """The error against the sum of |products| (|x| @ |W|^T), the scale that bounds an fp32 sum's rounding
    error whatever the order: with N = 1 and K = 8 the one output can cancel to 1e-3 of its terms, and a
    different summation order then moves it by more than 1e-5 of itself (seen on the AVX2 path)."""
    scale = x.float().abs() @ layout.unpack().float().abs().T
    return float((got.float() - ref.float()).norm() / scale.norm())


TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}

@pytest.mark.skipif(not HAS_AVX2, reason="the AVX2 path needs a CPU with AVX2")
@pytest.mark.parametrize("group", [32, 64, 96, 128, 256, 4096])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("k", [64, 96, 576, 640, 1152])
def test_avx2_int4_one_token_scales_each_group_once(group, symmetric, k):
    """At one token the AVX2 int4 kernel sums each group in four chains and scales the sums once per group (the
    loop unrolled for groups of 64, 128 and 256 inputs, a loop of steps for the others and for a short last
    group), and folds the zero point out with one scalar FMA a group. Groups longer than the row (one group),
    rows of one short group (64 at g96 / g128), short last groups (576 at g128 / g256: 64 inputs; 640 at g256:
    128), whole ones: against the reference (1e-5 of the sum of |products|) and against the 2-token kernel on
    the same token twice. (A group scaled by its neighbour's scale, a chain or a step left out, a wrong zero point
    miss by whole products.)"""
    layout = make("int4", 6, k, group=group, symmetric=symmetric, seed=k + group)
    _one_token_avx2_matches(layout, torch.randn(6, generator=_gen(9)), torch.randn(1, k, generator=_gen(500 + k)))


# (kind, options): every layout, the value dtypes of 2:4, asymmetric int4, g128 with a short last group at K = 576
CASES = [("semi24", {}), ("semi24", {"values": torch.bfloat16}), ("semi24", {"values": torch.float16}),
         ("int4", {"group": 128}), ("int4", {"group": 32, "symmetric": False}), ("int4_semi24", {"group": 128}),
         ("int4_semi24", {"group": 32, "symmetric": False}), ("mxfp4", {}), ("int8", {})]


@pytest.mark.parametrize("kind, opts", CASES, ids=[f"{k}-{'-'.join(map(str, o.values()))}" for k, o in CASES])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_layout_matches_the_reference(kind, opts, path, dtype):
    layout = make(kind, 40, 576, **opts)
    bias = torch.randn(40, generator=_gen(3))
    for m in (1, 2, 3, 7, 16, 33, 128):  # decode tiles of 1-8 tokens, then the dequantize + BLAS path
        x = torch.randn(m, 576, generator=_gen(m)).to(dtype)
        got = cpu_linear(x, layout, bias, path=path)
        assert got.dtype == dtype and got.shape == (m, 40)
        assert rel(got, packed_linear_reference(x, layout, bias)) < TOL[dtype], (m, path)


@pytest.mark.skipif(bool(_ext.cpu_info().get("bf16_dot")), reason="AVX512_BF16 CPUs multiply bf16 prefill in bf16")
@pytest.mark.parametrize("kind", ["semi24", "int4", "int4_semi24"])
def test_bf16_prefill_without_bf16_instructions_is_the_fp32_product_rounded_once(kind):
    """Past the decode tiles, bf16 activations on a CPU without AVX512_BF16 are widened and multiplied in fp32 (torch's
    bf16 matmul is several times slower there): the fp32 activations' result, rounded to bf16."""
    layout = make(kind, 40, 576, group=128)
    bias = torch.randn(40, generator=_gen(3))
    x = torch.randn(33, 576, generator=_gen(33)).bfloat16()
    assert torch.equal(cpu_linear(x, layout, bias), cpu_linear(x.float(), layout, bias).bfloat16())


@pytest.mark.parametrize("kind, n, k, opts", [("semi24", 1, 8, {}), ("int4", 1, 2, {"group": 2}),
                                              ("int4_semi24", 1, 8, {"group": 4}), ("mxfp4", 1, 32, {}),
                                              ("int8", 1, 1, {}), ("int4", 3, 48, {"group": 16}),
                                              ("semi24", 5, 40, {"values": torch.bfloat16})])
@pytest.mark.parametrize("path", ["scalar", "auto"] + (["avx2"] if HAS_AVX2 else []))
def test_smallest_legal_and_odd_shapes(kind, n, k, opts, path):
    """N = 1 and the smallest K each layout allows, and K that leaves a tail after the 16/32-wide chunks
    ('auto' takes AVX-512 or AVX2 where the layout's groups allow it, the scalar path where they do not;
    'avx2' is forced where they allow it)."""
    group = opts.get("group")
    if path == "avx2" and group is not None and group % 16 and group < k:
        pytest.skip("a forced SIMD path refuses groups that are not whole 16-input steps (tested above)")
    layout = make(kind, n, k, **opts)
    for m in (1, 5, 17):
        x = torch.randn(m, k, generator=_gen(k + m))
        assert rel_to_products(cpu_linear(x, layout, path=path), packed_linear_reference(x, layout), x, layout) < 1e-5


# Groups and K that the SIMD paths cannot run through their fastest loops (int4 groups of 16 / 48: not whole
# 32-input steps, though on AVX-512 g48 at K = 576 runs the nibble kernels with lane scales whose groups shift from
# chunk to chunk; K = 592 and 600: a 16-input tail after the 32-input steps, an 8-input tail after the 16-input
# chunks; 2:4 bf16 at K = 608: one 32-input step after the 64-input ones; one group per row that is not a
# multiple of 16): the per-chunk decoders, their group tracking and the
# scalar tails. M covers every decode tile size (1-8 tokens, then 9 = 8 + 1, 16) and the dequantize path (17).
GENERIC_CASES = [("int4", 592, {"group": 16}), ("int4", 576, {"group": 48, "symmetric": False}),
                 ("int4", 600, {"group": 600}), ("int4_semi24", 592, {"group": 16, "symmetric": False}),
                 ("int4_semi24", 576, {"group": 48}), ("int4_semi24", 600, {"group": 600}), ("semi24", 600, {}),
                 ("semi24", 600, {"values": torch.bfloat16}), ("semi24", 608, {"values": torch.bfloat16}),
                 ("semi24", 600, {"values": torch.float16}),
                 ("int8", 600, {}), ("mxfp4", 608, {})]


@pytest.mark.parametrize("kind, k, opts", GENERIC_CASES,
                         ids=[f"{k}-{K}-{'-'.join(map(str, o.values()))}" for k, K, o in GENERIC_CASES])
@pytest.mark.parametrize("path", SIMD_PATHS)
def test_simd_paths_outside_their_fastest_loops(kind, k, opts, path):
    layout = make(kind, 24, k, **opts, seed=k)
    bias = torch.randn(24, generator=_gen(4))
    for m in (1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17):
        x = torch.randn(m, k, generator=_gen(100 + m))
        assert rel(cpu_linear(x, layout, bias, path=path), packed_linear_reference(x, layout, bias)) < 1e-5, m


@pytest.mark.parametrize("n, k", [(7, 128), (7, 608), (2, 64), (1, 640), (7, 6208), (6, 6240), (3, 12352),
                                  (5, 12384), (70, 7208), (9, 14336)])
@pytest.mark.parametrize("path", SIMD_PATHS)
def test_semi24_bf16_rows_left_over_from_the_row_tiles(n, k, path):
    """2:4 with bf16 values (AVX-512) takes 2 rows a step at two or three tokens where a tile's activations pass
    24 KB, and at one token past it (K >= 6208) blocks of 32 rows over equal segments of at most 4096 inputs
    (kept_bf16_segments: 70 rows = 32 + 32 + 6 over 2 x 3584 inputs and a 32-input step and 8 inputs after
    them; K = 14336 as 4 x 3584), one row a step below: row counts that leave rows over, 64-input steps with and
    without a 32-input step after them, every tile of tokens (K up to 14336)."""
    layout = make("semi24", n, k, values=torch.bfloat16, seed=n + k)
    bias = torch.randn(n, generator=_gen(5))
    for m in (1, 2, 3, 4, 5, 6, 9, 16):
        x = torch.randn(m, k, generator=_gen(200 + m))
        got = cpu_linear(x, layout, bias, path=path)
        assert rel_to_products(got, packed_linear_reference(x, layout, bias), x, layout) < 1e-5, m


@pytest.mark.parametrize("n, k", [(1, 16), (2, 32), (7, 64), (3, 96), (5, 608), (7, 624), (4, 1544), (3, 14336)])
@pytest.mark.parametrize("path", SIMD_PATHS)
def test_int8_one_token_rows_four_at_a_time(n, k, path):
    """int8 at one token (AVX2) takes four rows a step over 64-input steps: 1-3 rows are left over, and K may end
    in a 32-input step (96, 608), a 16-input step (16 alone; 624 after the 32-input ones) or a scalar tail (1544
    ends in 8 inputs), up to Llama-3-8B's 14336; with a bias and a per-channel scale in every row."""
    layout = make("int8", n, k, seed=n + k)
    bias = torch.randn(n, generator=_gen(6))
    x = torch.randn(1, k, generator=_gen(300 + k))
    got = cpu_linear(x, layout, bias, path=path)
    assert rel_to_products(got, packed_linear_reference(x, layout, bias), x, layout) < 1e-5


@pytest.mark.parametrize("path", SIMD_PATHS)
def test_mxfp4_block_scales_across_the_e8m0_range(path):
    """MXFP4 blocks scaled from 2^-127 (E8M0 0: a subnormal scale) to 2^40, and one row with a NaN scale (E8M0 255):
    at one token the AVX2 kernel converts codes as integers (2 x E2M1 + 12) and applies each block's scale to its
    sum, and the bias fold takes the scales as fp32 bits (e << 23, e = 0 patched to 2^-127); at 2 and 5 tokens
    the table kernels. Rows without a NaN match the reference (1e-5 of the sum of |products|); the NaN row is NaN."""
    n, k = 6, 4096
    layout = make("mxfp4", n, k, seed=11)
    e = torch.randint(87, 168, (n, k // 32), generator=_gen(12), dtype=torch.int32)  # 2^-40 .. 2^40
    e[0, :5] = torch.tensor([0, 1, 2, 167, 127], dtype=torch.int32)
    e[2, 7] = 255
    layout = type(layout)(layout.shape, layout.codes, e.to(torch.uint8))
    for m in (1, 2, 5):
        x = torch.randn(m, k, generator=_gen(300 + m))
        got = cpu_linear(x, layout, path=path)
        want = packed_linear_reference(x, layout)
        assert torch.isnan(got[:, 2]).all() and torch.isnan(want[:, 2]).all(), m
        keep = [r for r in range(n) if r != 2]
        scale = x.abs() @ layout.unpack().float()[keep].abs().T
        assert float((got[:, keep] - want[:, keep]).norm() / scale.norm()) < 1e-5, m


def _one_token_avx2_matches(layout, bias: torch.Tensor, x: torch.Tensor) -> None:
    """The AVX2 kernel at one token against the reference (1e-5 of the sum of |products|) and against its 2-token
    kernel on the same token twice."""
    got = cpu_linear(x, layout, bias, path="avx2")
    assert rel_to_products(got, packed_linear_reference(x, layout, bias), x, layout) < 1e-5
    both = cpu_linear(torch.cat([x, x]), layout, bias, path="avx2")
    assert rel_to_products(got, both[:1], x, layout) < 1e-5


GATHER_CASES = [("semi24", {}), ("semi24", {"values": torch.bfloat16}), ("semi24", {"values": torch.float16}),
                ("int4_semi24", {"group": 128}), ("int4_semi24", {"group": 16, "symmetric": False}),
                ("int4_semi24", {"group": 48}), ("int4_semi24", {"group": 64, "symmetric": False})]


@pytest.mark.skipif(not HAS_AVX2, reason="the AVX2 path needs a CPU with AVX2")
@pytest.mark.parametrize("kind, opts", GATHER_CASES, ids=[f"{k}-{'-'.join(map(str, o.values()))}" for k, o in GATHER_CASES])
@pytest.mark.parametrize("k", [16, 48, 80, 96, 112, 136, 576, 592, 4104])
def test_avx2_one_token_gathers_the_kept_activations(kind, opts, k):
    """At one token the AVX2 2:4 and int4 + 2:4 kernels gather the kept activations (vpermilps of the activations
    stored A C B D per 16 inputs, the index the broadcast metadata shifted by 0, 2, .., 14) instead of expanding
    the weights: rows of one 16-input step (the step whose metadata is read as 2 bytes), 3 steps, a 64-input
    step and one after it, 6 steps (int4 + 2:4 g48: groups of 3 steps; g16: of one), 8 inputs left to the scalar
    decoder (136, 4104), a short last int4 group (592 at g128 / g64; 576 at g128: 64 inputs, unrolled); g64 and
    g128 run loops unrolled per group. bf16 values run 32 inputs a step on activations stored A E B F C G D H per
    32, two rows at once (5 rows: two pairs and one row alone): 48 = one such step and a last 16 inputs, 96 = a
    64-input step and one of 32, 112 = both and a last 16. Each against the reference (1e-5 of the sum of |products|, as above), with a bias, and against the 2-token kernel (the expansion) on the same token twice.
    (A wrong pick or a skipped step misses by whole products; a read past the row is not something this can see.)"""
    layout = make(kind, 5, k, **opts, seed=k)
    _one_token_avx2_matches(layout, torch.randn(5, generator=_gen(7)), torch.randn(1, k, generator=_gen(400 + k)))


@pytest.mark.parametrize("kind, opts", [("int4", {"group": 128}), ("int4_semi24", {"group": 32, "symmetric": False}),
                                        ("mxfp4", {})])
@pytest.mark.parametrize("path", ["scalar"] + (["avx2"] if HAS_AVX2 else []))
def test_a8_without_its_decode_kernels_is_the_exact_kernel_on_quantized_activations(kind, opts, path):
    """acts='int8' where no a8 kernel serves the call (prefill, 17+ tokens, on every path; the scalar path at
    every M): the binding quantizes the activations (d * q) and runs the exact kernels on them, so the result
    is bit for bit the exact kernel on `fake_quant_acts(x)`; and that is the reference product on d * q (1e-5:
    see the top). The AVX2 a8 decode kernels (1-16 tokens) are tested in test_cpu_a8.py."""
    from sparsekit.ops.backends.cpu import fake_quant_acts

    layout = make(kind, 40, 576, **opts)
    bias = torch.randn(40, generator=_gen(3))
    for m in ((1, 3, 16, 33) if path == "scalar" else (17, 33)):
        x = torch.randn(m, 576, generator=_gen(200 + m))
        got = cpu_linear(x, layout, bias, path=path, acts="int8")
        xq = fake_quant_acts(x)
        assert torch.equal(got, cpu_linear(xq, layout, bias, path=path)), m
        assert rel(got, packed_linear_reference(xq, layout, bias)) < 1e-5, m
        assert not torch.equal(xq, x)  # the activations were quantized: the check above can tell


@pytest.mark.parametrize("n, k", [(9, 8), (9, 64), (7, 584), (3, 640), (4, 1024), (13, 1096), (5, 1216), (6, 6240),
                                  (3, 12288), (11, 12352)])
def test_semi24_bf16_values_times_bf16_activations_are_exact_products(n, k):
    """2:4 with bf16 values and bf16 activations at decode (AVX512_BF16, `bf16_dot` in cpu_info: vdpbf16ps on
    activations gathered by the kept positions; at one token one row a step with 4 accumulators while the token's
    activations fit L1 (K = 1096: one step past the last 256 inputs, 1216: three), 8 rows a step above (K =
    12352: 24.1 KB), 4 rows by up to 4 tokens otherwise, rows left over 4 or one at a time, inputs past the last
    64 by the scalar decoder): every product of two bf16 numbers is exact in fp32, so the only errors are
    the fp32 sum's (bounded by 1e-5 of sum |products| at these K) and the output's rounding to bf16 (half a bf16
    ulp, 2^-9 of the value; the bound allows a whole ulp). A wrong gather index or pairing misses by whole
    products. 1 and 2 threads agree bit for bit."""
    layout = make("semi24", n, k, values=torch.bfloat16, seed=n + k)
    bias = torch.randn(n, generator=_gen(6))
    w = layout.unpack().double()
    before = torch.get_num_threads()
    try:
        for m in (1, 2, 3, 4, 5, 7, 16):  # every tile of tokens, and 4 tiles (the decode path's largest M)
            x = torch.randn(m, k, generator=_gen(300 + m)).bfloat16()
            torch.set_num_threads(1)
            got = cpu_linear(x, layout, bias)
            torch.set_num_threads(2)
            assert torch.equal(cpu_linear(x, layout, bias), got), m
            assert got.dtype == torch.bfloat16 and got.shape == (m, n)
            ref = x.double() @ w.T + bias.double()
            bound = 2.0**-8 * ref.abs() + 1e-5 * (x.double().abs() @ w.abs().T)
            assert bool(((got.double() - ref).abs() <= bound).all()), (m, float((got.double() - ref).abs().max()))
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("n, k, dtype", [(100, 7208, torch.float32), (40, 1096, torch.bfloat16)])
def test_semi24_bf16_one_token_rows_split_between_threads(n, k, dtype):
    """One token of 2:4 bf16 rows on 1, 2 and 3 threads, bit for bit: fp32 activations past L1 take blocks of 32
    rows over segments (2 threads: rows 50-99 start a block at 50; 3: a shorter last range), bf16 activations
    within L1 one row a step with 4 accumulators (2 threads: 20 rows each). Each row's sum does not depend on
    where its range starts."""
    layout = make("semi24", n, k, values=torch.bfloat16, seed=n)
    x = torch.randn(1, k, generator=_gen(n)).to(dtype)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cpu_linear(x, layout)
        for threads in (2, 3):
            torch.set_num_threads(threads)
            assert torch.equal(cpu_linear(x, layout), one), threads
    finally:
        torch.set_num_threads(before)
    ref = packed_linear_reference(x.float(), layout)
    assert rel_to_products(one.float(), ref, x.float(), layout) < (1e-5 if dtype == torch.float32 else 4e-3)


def test_non_contiguous_and_batched_inputs():
    layout = make("int4", 24, 64, group=32)
    base = torch.randn(3, 5, 128, generator=_gen(5))
    x = base[..., ::2]  # a strided view: every other feature
    assert not x.is_contiguous()
    got = packed_linear(x, layout, backend="cpu")
    assert got.shape == (3, 5, 24)
    assert rel(got, packed_linear_reference(x.contiguous(), layout)) < 1e-5


THREAD_CASES = [(kind, "float") for kind in ("semi24", "int4", "int4_semi24", "mxfp4", "int8")] + [
    (kind, "int8") for kind in ("int4", "int4_semi24", "mxfp4")]


@pytest.mark.parametrize("kind, acts", THREAD_CASES, ids=[f"{k}-{a}" for k, a in THREAD_CASES])
def test_threads_split_rows_without_changing_a_bit(kind, acts):
    """Decode splits the output rows between threads (binding.cpp, at::parallel_for): every row is computed by
    the same code whatever range it falls in, so 2 and 3 threads give the 1-thread result bit for bit, here
    with N = 1000 (3 threads: a shorter last range) and tiles of 1 and 3 tokens."""
    layout = make(kind, 1000, 256, group=128)
    before = torch.get_num_threads()
    try:
        for m in (1, 3):
            x = torch.randn(m, 256, generator=_gen(m))
            torch.set_num_threads(1)
            one = cpu_linear(x, layout, acts=acts)
            for threads in (2, 3):
                torch.set_num_threads(threads)
                assert torch.equal(cpu_linear(x, layout, acts=acts), one), (m, threads)
            assert rel(one, packed_linear_reference(x, layout)) < (0.05 if acts == "int8" else 1e-5)
    finally:
        torch.set_num_threads(before)


def test_auto_takes_the_cpu_kernel_for_cpu_activations_it_supports():
    layout = make("int4_semi24", 16, 64)
    assert select_kernel(torch.randn(2, 64), layout).backend == "cpu"
    assert select_kernel(torch.randn(2, 64).bfloat16(), layout).backend == "cpu"
    assert select_kernel(torch.randn(2, 64).half(), layout).backend == "reference"  # fp16 activations: not here
    with pytest.raises(ValueError, match="backend='cpu' requested but the CPU kernels take float32/bfloat16"):
        packed_linear(torch.randn(2, 64).half(), layout, backend="cpu")


def test_binding_errors_name_the_constraint():
    ext = _ext.load_cpu()
    layout = make("int4", 8, 64)
    t = layout.tensors()
    x = torch.randn(2, 64)
    with pytest.raises(RuntimeError, match="input has 32 features but the weight has in_features=64"):
        ext.linear(torch.randn(2, 32), 1, 8, 64, codes=t["codes"], scales=t["scales"], group=32)
    with pytest.raises(RuntimeError, match=r"codes must have shape \[8, 32\]"):
        ext.linear(x, 1, 8, 64, codes=t["codes"][:, :16].contiguous(), scales=t["scales"], group=32)
    with pytest.raises(RuntimeError, match="scales must be float16"):
        ext.linear(x, 1, 8, 64, codes=t["codes"], scales=t["scales"].float(), group=32)
    with pytest.raises(RuntimeError, match="this layout needs its meta tensor"):
        ext.linear(x, 2, 8, 64, codes=t["codes"], scales=t["scales"], group=32)
    with pytest.raises(RuntimeError, match="activations must be float32 or bfloat16"):
        ext.linear(x.half(), 1, 8, 64, codes=t["codes"], scales=t["scales"], group=32)
    with pytest.raises(RuntimeError, match="path must be 'auto', 'avx512', 'avx2' or 'scalar'"):
        ext.linear(x, 1, 8, 64, codes=t["codes"], scales=t["scales"], group=32, path="fast")
    with pytest.raises(RuntimeError, match="unknown layout kind 9"):
        ext.linear(x, 9, 8, 64, codes=t["codes"], scales=t["scales"], group=32)
    if "avx512" in PATHS:
        small = make("int4", 8, 64, group=8)
        with pytest.raises(RuntimeError, match="the AVX-512 path needs group_size % 16 == 0"):
            cpu_linear(x, small, path="avx512")
    if HAS_AVX2:
        small = make("int4", 8, 64, group=8)
        with pytest.raises(RuntimeError, match="the AVX2 path needs group_size % 16 == 0"):
            cpu_linear(x, small, path="avx2")


def test_int8_layout_converts_and_runs_packed():
    """`quantize: {format: int8}` (per channel) now packs, and the packed model computes the simulation."""
    import sparsekit
    from tests.tiny import tiny_model

    recipe = [{"quantize": {"format": "int8"}}]
    simulated = sparsekit.compress(tiny_model("llama", seed=2), recipe, progress=False).model
    result = sparsekit.convert(tiny_model("llama", seed=2), recipe, progress=False)
    assert set(result.packed.values()) == {"int8"}
    module = result.model.get_submodule("model.layers.1.mlp.down_proj")
    assert torch.equal(module.dequantized_weight(), simulated.get_submodule("model.layers.1.mlp.down_proj").weight)
    assert module.layout().bits_per_weight == pytest.approx(8 + 16 / 96)
    ids = torch.randint(3, 300, (2, 20), generator=_gen(1))
    with torch.no_grad():
        assert rel(result.model(ids).logits, simulated(ids).logits) < 1e-5


# --- the C++ kernel of the custom op (csrc/cpu/binding.cpp: TORCH_LIBRARY_IMPL(sparsekit, CPU)) ----------------
KINDS = ["semi24", "int4", "int4_semi24", "mxfp4", "int8"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_op_runs_the_cpp_kernel_without_python(kind, monkeypatch):
    """Once sparsekit._cpu is loaded the op's CPU kernel is C++: with the Python implementation made to
    fail, 'auto' and 'cpu' still run (and agree with the C++ entry point), while an explicit 'reference'
    is handed back to Python (and fails here, as patched)."""
    from sparsekit.ops import packed_linear as pl

    _ext.load_cpu()
    assert torch._C._dispatch_has_kernel_for_dispatch_key("sparsekit::packed_linear", "CPU")
    layout = make(kind, 48, 128)
    x = torch.randn(3, 128, generator=_gen(5))
    tensors, spec = list(layout.tensors().values()), pl.layout_spec(layout)
    want = cpu_linear(x, layout)

    def python_ran(*args, **kwargs):
        raise RuntimeError("the Python implementation ran")

    monkeypatch.setattr(pl, "_run", python_ran)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for backend in ("auto", "cpu"):
        assert torch.equal(torch.ops.sparsekit.packed_linear(x, tensors, None, spec, backend), want)
    with pytest.raises(RuntimeError, match="the Python implementation ran"):
        torch.ops.sparsekit.packed_linear(x, tensors, None, spec, "reference")
    import json

    unsorted = json.dumps(dict(reversed(list(json.loads(spec).items()))))  # valid JSON, not layout_spec's text
    with pytest.raises(RuntimeError, match="the Python implementation ran"):  # C++ reads only the canonical form
        torch.ops.sparsekit.packed_linear(x, tensors, None, unsorted, "auto")
    with pytest.raises(RuntimeError, match="the Python implementation ran"):  # misfit inputs: Python's errors
        torch.ops.sparsekit.packed_linear(x[:, :64], tensors, None, spec, "auto")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # auto may pick Triton then: Python decides
    with pytest.raises(RuntimeError, match="the Python implementation ran"):
        torch.ops.sparsekit.packed_linear(x, tensors, None, spec, "auto")


def test_cases_the_cpp_kernel_hands_back_give_the_python_result():
    from sparsekit.ops import packed_linear as pl

    _ext.load_cpu()
    layout = make("int4", 32, 64, symmetric=False)
    tensors, spec = list(layout.tensors().values()), pl.layout_spec(layout)
    x = torch.randn(2, 64, generator=_gen(6))
    ref = packed_linear_reference(x, layout)
    assert torch.equal(torch.ops.sparsekit.packed_linear(x, tensors, None, spec, "reference"), ref)
    half = torch.ops.sparsekit.packed_linear(x.half(), tensors, None, spec, "auto")  # fp16: the reference serves it
    assert half.dtype == torch.float16 and rel(half, ref) < 1e-2
    with pytest.raises(Exception, match="unknown backend"):
        torch.ops.sparsekit.packed_linear(x, tensors, None, spec, "tpu")


def _load_time_functions(disassembly: str) -> dict[str, list[str]]:
    """Instructions of each function in an `objdump -d` listing, by symbol."""
    functions: dict[str, list[str]] = {}
    current = None
    for line in disassembly.splitlines():
        if line.endswith(">:"):
            current = line.split("<", 1)[1][:-2]
            functions[current] = []
        elif current is not None and line.strip():
            functions[current].append(line)
    return functions


def test_loading_the_library_runs_no_simd_instructions():
    """The static constructors that run when the library loads are baseline x86-64 code: a table built by a
    constructor compiled under the AVX-512 file's `#pragma GCC target` killed `import` with SIGILL on an
    AVX2-only CPU (AMD Zen 3), which a run on an AVX-512 machine cannot notice. Follows calls into the
    library's own functions."""
    import platform
    import re
    import shutil
    import subprocess

    if platform.machine() != "x86_64" or shutil.which("objdump") is None:
        pytest.skip("needs x86-64 and binutils' objdump")
    from sparsekit import _cpu

    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", _cpu.__file__], capture_output=True,
                             text=True, check=True).stdout
    functions = _load_time_functions(listing)
    todo = [name for name in functions if name.startswith("_GLOBAL__sub_I")]
    assert todo, "no static constructor found: the listing's format changed"
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue  # a PLT stub or a function of another library: not this file's code
        seen.add(name)
        for line in functions[name]:
            assert not re.search(r"%[yz]mm|%k[0-7]\b", line), f"{name} runs AVX/AVX-512 code at load: {line.strip()}"
            call = re.search(r"\b(?:call|jmp)\w*\s+[0-9a-f]+ <([^>@+]+)", line)
            if call:
                todo.append(call.group(1))


_PLAN_SCRIPT = """
import sys, torch
from tests.ops.test_cpu_kernels import THREAD_CASES, make
from sparsekit import _ext
from sparsekit.ops.backends.cpu import cpu_linear
x = torch.randn(3, 256, generator=torch.Generator().manual_seed(7))
outs = {f"{kind}-{acts}": cpu_linear(x[:m], make(kind, 40, 256, group=128), acts=acts)
        for kind, acts in THREAD_CASES for m in (1, 3)}
torch.save({"plan": _ext.cpu_info()["prefetch"], "outs": outs}, sys.argv[1])
"""


def test_prefetch_plans_change_no_bit_and_a_bad_plan_names_its_constraint(tmp_path):
    """SPARSEKIT_CPU_PREFETCH moves where the decode loops' prefetches land (binding.cpp, packed_cpu.h): a hint
    to the cache, so every layout gives the same bits under any plan. Read once per process: each plan runs in
    a process of its own."""
    import subprocess
    import sys

    from tests.bench_scripts import REPO

    results = {}
    for plan in ("l1:64", "l2:8192"):
        out = tmp_path / f"{plan.replace(':', '_')}.pt"
        env = dict(os.environ, SPARSEKIT_CPU_PREFETCH=plan, OMP_NUM_THREADS="1")
        subprocess.run([sys.executable, "-c", _PLAN_SCRIPT, str(out)], cwd=REPO, env=env, check=True)
        results[plan] = torch.load(out)
        assert results[plan]["plan"] == plan
    a, b = results["l1:64"]["outs"], results["l2:8192"]["outs"]
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    for bad, says in (("l3:4096", "'l1:BYTES' or 'l2:BYTES'"), ("l2:100", "multiple of 64 bytes"),
                      ("l1:", "multiple of 64 bytes")):
        env = dict(os.environ, SPARSEKIT_CPU_PREFETCH=bad)
        done = subprocess.run([sys.executable, "-c", "from sparsekit import _ext; _ext.load_cpu().prefetch()"],
                              cwd=REPO, env=env, capture_output=True, text=True)
        assert done.returncode != 0 and says in done.stderr, (bad, done.stderr[-500:])
