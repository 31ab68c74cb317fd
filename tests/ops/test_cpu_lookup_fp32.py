"""int4, MXFP4 and int4 + 2:4 with fp32 activations at 2-16 tokens (csrc/cpu/gemm_lookup_fp32.cpp): each weight
looked up as the reference's fp32 value, then FMAs (int4 + 2:4: with the kept inputs gathered), 4 rows by up to 4
tokens a tile.

One-hot activations read the decoded weights back exactly (w x 1 plus zeros): every code, phase, lane scale, zero
point, 2:4 position and short last chunk is checked bit for bit against `Layout.unpack()`. Random activations are
held to the float64 product at fp32 summation noise, as the other fp32 kernels are.
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

if not _ext.cpu_info().get("avx512"):
    pytest.skip("the lookup kernel is on the AVX-512 path", allow_module_level=True)

# every scale arrangement: a table per row and chunk (g128, g256, the whole row; symmetric and not), lane scales
# (g32 / g64 / g16, MXFP4's 32); K = 576 ends on a short chunk of 64 inputs, 160 and 224 on one of 32 / 96
CASES = [("int4", {"group": 128}, 576), ("int4", {"group": 128, "symmetric": False}, 4096),
         ("int4", {"group": 256, "symmetric": False}, 1024), ("int4", {"group": 576}, 576),
         ("int4", {"group": 32, "symmetric": False}, 576), ("int4", {"group": 64}, 160),
         ("int4", {"group": 16, "symmetric": False}, 224), ("mxfp4", {}, 576), ("mxfp4", {}, 224),
         # groups of 8k that neither divide 128 nor are multiples of it: lane scales from a chunk's two groups, in a
         # pattern that shifts from chunk to chunk; a group longer than the row
         ("int4", {"group": 96, "symmetric": False}, 576), ("int4", {"group": 160}, 480),
         ("int4", {"group": 1024, "symmetric": False}, 576),
         # int4 + 2:4 in half steps of 32 inputs: a group per half or several halves a group; K = 160 and 288 end
         # on an odd half
         ("int4_semi24", {"group": 128}, 576), ("int4_semi24", {"group": 32, "symmetric": False}, 160),
         ("int4_semi24", {"group": 96, "symmetric": False}, 288), ("int4_semi24", {"group": 160}, 480),
         ("int4_semi24", {"group": 4096}, 4096)]
IDS = [f"{c[0]}-{'-'.join(map(str, c[1].values()))}-k{c[2]}" for c in CASES]


@pytest.mark.parametrize("kind, opts, k", CASES, ids=IDS)
def test_one_hot_activations_read_back_the_reference_weights_bit_for_bit(kind, opts, k):
    layout = make(kind, 37, k, **opts)  # 37 rows: blocks of 4, then a single row
    w = layout.unpack()
    cols = torch.randperm(k, generator=_gen(k))
    for m in (2, 3, 4, 16):  # each tile of tokens, and 4 tiles
        for start in range(0, k, m):  # every input of the row once, in random groups of m
            ks = cols[start:start + m]
            x = torch.zeros(len(ks), k)
            x[torch.arange(len(ks)), ks] = 1.0
            if len(ks) < 2:  # one token takes the bf16-parts kernel
                continue
            got = cpu_linear(x, layout, path="avx512")
            assert torch.equal(got, w[:, ks].T), (m, ks.tolist())


@pytest.mark.parametrize("kind, opts, k", CASES, ids=IDS)
def test_fp32_summation_noise_against_float64(kind, opts, k):
    layout = make(kind, 37, k, **opts)
    ref_w = layout.unpack().double()
    for m in (2, 5, 16):
        x = torch.randn(m, k, generator=_gen(m)) * 3
        got = cpu_linear(x, layout, path="avx512")
        # fp32 FMAs over k products: a few ulp of the sum of |products| (measured 1e-8 to 1e-7)
        assert rel_to_products(got, x.double() @ ref_w.T, x, layout) < 1e-6, m


def test_bias_threads_and_non_contiguous_inputs():
    layout = make("int4", 203, 576, group=64, symmetric=False)
    bias = torch.randn(203, generator=_gen(9))
    x = torch.randn(6, 1152, generator=_gen(10))[:, ::2]  # strided: the binding makes it contiguous
    one, two = (at_threads(t, lambda: cpu_linear(x, layout, bias, path="avx512")) for t in (1, 2))
    assert torch.equal(one, two)  # threads split rows; a row's result does not depend on its range
    ref = x.double() @ layout.unpack().double().T + bias.double()
    assert float((one.double() - ref).norm() / ref.norm()) < 1e-6


def test_int4_semi24_never_multiplies_a_pruned_weight():
    """The kept inputs are gathered, so an inf where a row's weight is pruned does not reach that row (finite; the
    reference's 0 x inf is NaN there); where the weight is kept the row is as in the reference: +-inf, or NaN where
    the kept weight's code decodes to 0."""
    layout = make("int4_semi24", 37, 576, group=128)
    w, kept = layout.unpack(), layout.mask()[:, 100]
    x = torch.randn(2, 576, generator=_gen(11))
    x[:, 100] = float("inf")
    got = cpu_linear(x, layout, path="avx512")
    ref = x.double() @ w.double().T
    assert bool(kept.any()) and bool((~kept).any())
    assert bool(got[:, ~kept].isfinite().all()) and bool(ref[:, ~kept].isnan().all())
    assert torch.equal(got[:, kept].isnan(), ref[:, kept].isnan())
    assert torch.equal(got[:, kept].nan_to_num(), ref[:, kept].float().nan_to_num())
