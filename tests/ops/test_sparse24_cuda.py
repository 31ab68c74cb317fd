"""The sparse-tensor-core CUDA kernels (csrc/sparse24_gemm.cu) against the reference, on a GPU.

Fresh random inputs per case (never zeros), every M from decode to prefill including odd ones, K/N at
their smallest legal sizes, split-K on and off, poisoned output buffers (NaN before the call: every
element must be written), and the binding's error messages. Skipped without a GPU and the extension.
"""

import pytest
import torch

from sparsekit import _ext
from sparsekit.ops.backends.cuda import launch_config
from sparsekit.ops.packed_linear import packed_linear, packed_linear_reference
from sparsekit.pack import Int4Semi24, Semi24, to_mma
from sparsekit.prune.patterns import nm_mask
from sparsekit.quant.integer import IntFormat

pytestmark = [pytest.mark.gpu, pytest.mark.cuda_ext]
DTYPES = [torch.float16, torch.bfloat16]
TOL = {torch.float16: 1e-3, torch.bfloat16: 1e-2}  # docs/ARCHITECTURE.md §6; bf16 weights carry 8-bit mantissas


def _layouts(n: int, k: int, dtype: torch.dtype, seed: int, group: int = 128):
    g = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randn(n, k, device="cuda", generator=g) * 0.05
    mask = nm_mask(torch.rand(n, k, device="cuda", generator=g), 2, 4)
    w24 = w.masked_fill(~mask, 0)
    semi = to_mma(Semi24.pack(w24.to(dtype), mask))
    q = IntFormat(4, group, True).quantize(w24, mask)
    int4 = to_mma(Int4Semi24.pack(q, mask))
    return {"semi24": semi, "int4_semi24": int4}


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


def _call(layout, x, bias=None, splits=None, block_m=None, out=None):
    ext = _ext.load()
    n, k = layout.shape
    s, b = launch_config(x.shape[0], n, k, torch.cuda.get_device_properties(0).multi_processor_count)
    splits, block_m = splits or s, block_m or b
    if layout.KIND == "int4_semi24_mma":
        return ext.int4_sparse24_gemm(x, layout.codes, layout.meta, layout.scales, layout.group_size, bias, splits,
                                      block_m, out)
    return ext.sparse24_gemm(x, layout.values, layout.meta, bias, splits, block_m, out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["semi24", "int4_semi24"])
@pytest.mark.parametrize("m", [1, 2, 3, 7, 8, 13, 16, 17, 31, 33, 64, 65, 127, 256, 1000, 4096])
def test_kernel_matches_reference_every_m(kind, dtype, m):
    n, k = 256, 512
    layout = _layouts(n, k, dtype, seed=m)[kind]
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    out = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)  # poisoned: every element must be written
    _call(layout, x, out=out)
    torch.cuda.synchronize()
    ref = packed_linear_reference(x, layout)
    assert torch.isfinite(out).all(), "an output element was never written"
    assert _rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["semi24", "int4_semi24"])
@pytest.mark.parametrize("n,k", [(16, 64), (48, 64), (80, 192), (4096, 576), (1024, 4096)])
@pytest.mark.parametrize("m", [1, 5, 300])
def test_kernel_shape_edges(kind, dtype, n, k, m):
    group = 64 if k % 128 else 128
    layout = _layouts(n, k, dtype, seed=n + k + m, group=group)[kind]
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    bias = torch.randn(n, device="cuda", dtype=dtype)
    for splits in sorted({1, k // 64}):
        out = torch.full((m, n), float("nan"), device="cuda", dtype=dtype)
        _call(layout, x, bias=bias, splits=splits, out=out)
        ref = packed_linear_reference(x, layout, bias)
        assert torch.isfinite(out).all()
        assert _rel_err(out, ref) < TOL[dtype], f"splits={splits}"


@pytest.mark.parametrize("block_m", [8, 16, 32, 64, 128])
def test_every_token_tile_gives_the_same_answer(block_m):
    layout = _layouts(128, 256, torch.float16, seed=7)["int4_semi24"]
    x = torch.randn(40, 256, device="cuda", dtype=torch.float16)
    out = _call(layout, x, splits=2, block_m=block_m)
    assert _rel_err(out, packed_linear_reference(x, layout)) < 1e-3


def test_split_k_is_deterministic():
    layout = _layouts(512, 4096, torch.float16, seed=8)["semi24"]
    x = torch.randn(3, 4096, device="cuda", dtype=torch.float16)
    first = _call(layout, x, splits=16)
    for _ in range(3):
        assert torch.equal(_call(layout, x, splits=16), first)


def test_packed_linear_dispatches_cuda_and_keeps_batch_shape():
    layout = _layouts(64, 128, torch.float16, seed=9)["semi24"]
    x = torch.randn(2, 3, 128, device="cuda", dtype=torch.float16)
    out = packed_linear(x, layout, backend="cuda")
    assert out.shape == (2, 3, 64)
    assert _rel_err(out, packed_linear_reference(x, layout)) < 1e-3
    assert torch.equal(packed_linear(x, layout, backend="auto"), out)


def test_binding_errors_name_the_constraint():
    ext = _ext.load()
    layout = _layouts(64, 128, torch.float16, seed=10)["semi24"]
    x = torch.randn(4, 128, device="cuda", dtype=torch.float16)
    with pytest.raises(RuntimeError, match="float16 or bfloat16"):
        ext.sparse24_gemm(x.float(), layout.values, layout.meta)
    with pytest.raises(RuntimeError, match="values are"):
        ext.sparse24_gemm(x.bfloat16(), layout.values, layout.meta)
    with pytest.raises(RuntimeError, match="CUDA tensor"):
        ext.sparse24_gemm(x.cpu(), layout.values, layout.meta)
    with pytest.raises(RuntimeError, match="multiple of 64"):
        ext.sparse24_gemm(x[:, :96].contiguous(), layout.values, layout.meta)
    with pytest.raises(RuntimeError, match="16-byte aligned"):
        ext.sparse24_gemm(torch.randn(4 * 128 + 1, device="cuda", dtype=torch.float16)[1:].view(4, 128),
                          layout.values, layout.meta)
    with pytest.raises(RuntimeError, match="splits must be"):
        ext.sparse24_gemm(x, layout.values, layout.meta, None, 3)
    with pytest.raises(RuntimeError, match="block_m"):
        ext.sparse24_gemm(x, layout.values, layout.meta, None, 1, 12)
    with pytest.raises(RuntimeError, match="meta must have shape"):
        ext.sparse24_gemm(x, layout.values, layout.meta[:, :1].contiguous())
    q = _layouts(64, 128, torch.float16, seed=11)["int4_semi24"]
    with pytest.raises(RuntimeError, match="group_size must be"):
        ext.int4_sparse24_gemm(x, q.codes, q.meta, q.scales, 48)
    with pytest.raises(RuntimeError, match="out must have shape"):
        ext.sparse24_gemm(x, layout.values, layout.meta, None, 1, 16, torch.empty(5, 64, device="cuda",
                                                                                   dtype=torch.float16))
