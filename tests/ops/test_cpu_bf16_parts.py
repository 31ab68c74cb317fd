"""int4, MXFP4 (csrc/cpu/gemm_nibble_bf16.cpp) and int4 + 2:4 (csrc/cpu/gemm_avx512_bf16.cpp) decode through
vdpbf16ps, where the CPU has AVX512_BF16.

The kernel writes each fp32 activation as the sum of up to three bf16 parts (exactly: 3 x 8 significant bits),
multiplies them with the codes' values (exact in bf16) and sums the exact products in fp32. So it is as exact as
the fp32 kernels: against a float64 product its error is fp32 summation noise, measured against the sum of
|products| (`rel_to_products`: a sum that cancels says nothing about the terms). The fp32 AVX2 kernel on the
same inputs gives the noise level; 2x that (the new kernel measured 1-10x below it) plus 1e-9 for the sums that
are exact on both sides. Dropping one part of an fp32 activation (2^-16 or 2^-8 of it) is ~10-1000x over.
"""

from __future__ import annotations

import os

import pytest
import torch

from sparsekit import _ext
from tests.ops.test_cpu_kernels import _gen, at_threads, make, rel_to_products

if not _ext.cpu_available():
    if os.environ.get("SPARSEKIT_REQUIRE_CPU_EXT") == "1":
        raise RuntimeError("sparsekit._cpu is not built but SPARSEKIT_REQUIRE_CPU_EXT=1")
    pytest.skip("sparsekit._cpu not built (no C++ compiler at install time)", allow_module_level=True)

from sparsekit.ops.backends.cpu import cpu_linear  # noqa: E402  (needs the extension)

INFO = _ext.cpu_info()
if not (INFO.get("bf16_dot") and INFO.get("avx2")):
    pytest.skip("needs AVX512_BF16 (the kernel) and AVX2 (the fp32 kernel it is held to)", allow_module_level=True)

# every scale arrangement: int4 groups of 128 (one per chunk), whole row, 32 and 64 (per lane), asymmetric;
# MXFP4 (a scale per 32 inputs). K = 576 ends on a short chunk of 64 inputs, 160 on one of 32, 4096 on none.
CASES = [("int4", {"group": 128}, 576), ("int4", {"group": 128}, 4096), ("int4", {"group": 576}, 576),
         ("int4", {"group": 32, "symmetric": False}, 576), ("int4", {"group": 64}, 4096),
         ("int4", {"group": 128, "symmetric": False}, 4096), ("int4", {"group": 32}, 160), ("mxfp4", {}, 576),
         ("mxfp4", {}, 4096), ("mxfp4", {}, 224),
         # lane scales from a chunk's two groups, the pattern shifting from chunk to chunk (g96, g160)
         ("int4", {"group": 96, "symmetric": False}, 576), ("int4", {"group": 160}, 480),
         # int4 + 2:4 steps 64 inputs: K = 160 and 96 end on a step of 32; g32: the two halves of a step's lanes
         ("int4_semi24", {"group": 128}, 576), ("int4_semi24", {"group": 128}, 4096),
         ("int4_semi24", {"group": 32, "symmetric": False}, 576), ("int4_semi24", {"group": 128, "symmetric": False}, 160),
         ("int4_semi24", {"group": 96}, 96), ("int4_semi24", {"group": 32}, 224),
         # g96: chunks whose halves lie in two groups (64-127: 0 and 1) and in one (128-191: 1)
         ("int4_semi24", {"group": 96, "symmetric": False}, 288)]


def _acts(kind: str, m: int, k: int, seed: int) -> torch.Tensor:
    """Activations that need 1 (bf16), 2 (16 significant bits) or 3 (fp32) bf16 parts."""
    x = torch.randn(m, k, generator=_gen(seed)) * 3
    if kind == "bf16":
        return x.bfloat16().float()
    if kind == "two":
        hi = x.bfloat16().float()
        return hi + (x - hi).bfloat16().float()
    return x


@pytest.mark.parametrize("kind, opts, k", CASES, ids=[f"{c[0]}-{'-'.join(map(str, c[1].values()))}-k{c[2]}"
                                                      for c in CASES])
@pytest.mark.parametrize("acts", ["fp32", "two", "bf16"])
def test_as_exact_as_the_fp32_kernel(kind, opts, k, acts):
    layout = make(kind, 37, k, **opts)  # 37 rows: blocks of 8 and of 4 rows, then single rows
    w = layout.unpack().double()
    # one token runs this kernel for every kind of activations; 2-16 tokens run it on bf16 activations and the fp32
    # lookup tiles on the others (gemm_lookup_fp32.cpp, held to the same bound here)
    for m in (1, 2, 3, 5, 16):
        x = _acts(acts, m, k, seed=m)
        ref = x.double() @ w.T
        got = cpu_linear(x, layout, path="avx512")
        fp32 = cpu_linear(x, layout, path="avx2")
        assert rel_to_products(got, ref, x, layout) <= 2 * rel_to_products(fp32, ref, x, layout) + 1e-9, (m, acts)


def test_bf16_activations_and_bias():
    layout = make("int4", 40, 576, group=128)
    x = torch.randn(3, 576, generator=_gen(4)).bfloat16()
    bias = torch.randn(40, generator=_gen(5))
    got = cpu_linear(x, layout, bias, path="avx512")
    assert got.dtype == torch.bfloat16
    ref = x.double() @ layout.unpack().double().T + bias.double()
    assert float((got.double() - ref).norm() / ref.norm()) < 1e-2  # one bf16 rounding of the output


@pytest.mark.parametrize("kind", ["int4", "int4_semi24"])
def test_threads_and_row_ranges_are_bit_identical(kind):
    layout = make(kind, 203, 4096, group=64, symmetric=False)
    x = torch.randn(1, 4096, generator=_gen(6))
    one, two = (at_threads(t, lambda: cpu_linear(x, layout, path="avx512")) for t in (1, 2))
    assert torch.equal(one, two)


def test_non_finite_activations_take_the_fp32_kernel():
    # inf - inf would turn a split's products into NaN: such a call runs the fp32 lookup kernel
    # (gemm_lookup_fp32.cpp), which multiplies the decoded weights as the reference does: +-inf where the row's
    # weight there is not 0, NaN where it is 0 (0 x inf). (The AVX2 fp32 kernel folds the zero point out of its
    # loop, so it gives NaN for every row there: inf - inf. int4 + 2:4 checks its activations with the same function;
    # its AVX-512 and AVX2 fp32 kernels differ on inf too: one multiplies the kept weights only, the other the pruned
    # zeros as well.)
    layout = make("int4", 16, 576, group=128)
    w = layout.unpack().double()
    for bad in (float("inf"), float("-inf"), float("nan"), 3.3e38):
        x = torch.randn(1, 576, generator=_gen(7))
        x[0, 100] = bad
        got = cpu_linear(x, layout, path="avx512")
        ref = x.double() @ w.T
        assert torch.equal(got.isnan(), ref.isnan()) and torch.equal(got.isinf(), ref.isinf()), bad
        assert torch.equal(got[got.isinf()].sign(), ref[ref.isinf()].float().sign()), bad
        fin = ref.isfinite()
        assert torch.allclose(got[fin].double(), ref[fin], rtol=1e-5), bad
    # and a row whose weight at the inf is 0 gives NaN: the case is in the data above
    x = torch.randn(1, 576, generator=_gen(7))
    x[0, 100] = float("inf")
    assert bool((w[:, 100] == 0).any()) and bool(cpu_linear(x, layout, path="avx512").isnan().any())


def test_mxfp4_extreme_scales():
    # E8M0 0 is 2^-127 (a subnormal scale), 255 is NaN: each lane's scale as the reference decodes it
    layout = make("mxfp4", 8, 256)
    t = dict(layout.tensors())
    e = t["scales"].clone()
    e[0, 0], e[1, 3], e[2, 5] = 0, 255, 140
    layout = type(layout).from_tensors(layout.shape, {**t, "scales": e}, layout.attrs())
    for m in (1, 3):  # this kernel, then the fp32 lookup tiles (gemm_lookup_fp32.cpp)
        x = torch.randn(m, 256, generator=_gen(8)) * 1e-3
        got = cpu_linear(x, layout, path="avx512")
        ref = x.double() @ layout.unpack().double().T
        assert torch.equal(got.isnan(), ref.isnan()) and bool(got[:, 1].isnan().all()), m
        fin = ref.isfinite()
        assert torch.allclose(got[fin].double(), ref[fin], rtol=1e-5, atol=0), m


def test_mxfp4_short_chunk_reads_only_its_rows_scales():
    # K = 224: a whole chunk of 4 blocks, then one of 3. Whole chunks load their 4 scales plainly; the short one
    # must not take the next row's first scale (here NaN) into its fourth lane group, where it would meet zero
    # activations (NaN x 0 = NaN for the whole row)
    layout = make("mxfp4", 8, 224)
    t = dict(layout.tensors())
    e = t["scales"].clone()
    e[1:, 0] = 255
    layout = type(layout).from_tensors(layout.shape, {**t, "scales": e}, layout.attrs())
    for m in (1, 3):  # the bf16-parts kernel, then the fp32 lookup tiles
        x = torch.randn(m, 224, generator=_gen(9))
        got = cpu_linear(x, layout, path="avx512")
        assert bool(got[:, 0].isfinite().all()) and bool(got[:, 1:].isnan().all()), m
        ref = x.double() @ layout.unpack().double()[:1].T
        assert torch.allclose(got[:, :1].double(), ref, rtol=1e-5, atol=1e-6), m
