"""packed_linear: the reference is unpack + fp32 matmul; the Triton kernel matches it on every layout."""

import pytest
import torch

from sparsekit.calib.stats import LinearStats, accumulate
from sparsekit.ops import _dispatch
from sparsekit.ops.packed_linear import packed_linear, packed_linear_reference
from sparsekit.pack.layouts import MXFP4, Int4, Int4Semi24, Semi24
from sparsekit.prune.patterns import nm_mask
from sparsekit.quant import IntFormat, get_format, sparsegpt_gptq

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def make_layout(kind: str, n: int, k: int, dtype=torch.float16, seed=0, group=32, symmetric=True):
    """A packed layout of fresh random weights (never zeros or ones)."""
    w = torch.randn(n, k, generator=_gen(seed)) * 0.1
    if kind == "semi24":
        mask = nm_mask(torch.rand(n, k, generator=_gen(seed + 1)), 2, 4)
        return Semi24.pack(w.masked_fill(~mask, 0).to(dtype), mask)
    if kind == "int4":
        return Int4.pack(IntFormat(4, group, symmetric).quantize(w))
    if kind == "mxfp4":
        return MXFP4.pack(get_format("mxfp4").quantize(w))
    if kind == "int4_semi24":
        xtx = accumulate(LinearStats.empty(k, hessian=True), torch.randn(4 * k, k, generator=_gen(seed + 2))).xtx
        _, keep, q = sparsegpt_gptq(w, xtx, IntFormat(4, group, symmetric), pattern="2:4", blocksize=group)
        return Int4Semi24.pack(q, keep)
    raise AssertionError(kind)


def rel_err(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_reference_is_unpack_then_linear():
    layout = make_layout("int4", 24, 64, group=32)
    x = torch.randn(5, 64, generator=_gen(9))
    bias = torch.randn(24, generator=_gen(10))
    want = x @ layout.unpack().T + bias
    torch.testing.assert_close(packed_linear_reference(x, layout, bias), want, rtol=1e-5, atol=1e-5)
    assert packed_linear(x.half(), layout).dtype == torch.float16


def test_errors_name_the_constraint():
    layout = make_layout("semi24", 16, 64)
    with pytest.raises(ValueError, match="input has 32 features but the semi24 weight has in_features=64"):
        packed_linear(torch.randn(2, 32), layout)
    with pytest.raises(ValueError, match="float16/bfloat16/float32, got torch.int32"):
        packed_linear(torch.ones(2, 64, dtype=torch.int32), layout)
    with pytest.raises(ValueError, match=r"bias must be a \[16\] tensor"):
        packed_linear(torch.randn(2, 64), layout, torch.randn(3))
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        packed_linear(torch.randn(2, 64), layout, backend="fast")
    with pytest.raises(ValueError, match="backend='cuda' requested but the semi24 layout has no cuda kernel"):
        packed_linear(torch.randn(2, 64), layout, backend="cuda")
    if not _dispatch.triton_interpret():
        with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
            packed_linear(torch.randn(2, 64), layout, backend="triton")


@pytest.mark.triton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind, k, group", [("semi24", 8, 0), ("semi24", 200, 0), ("int4", 32, 32), ("int4", 576, 128),
                                            ("mxfp4", 32, 32), ("mxfp4", 288, 32), ("int4_semi24", 32, 32),
                                            ("int4_semi24", 576, 128)])
@pytest.mark.parametrize("m", [1, 3, 17, 33])
def test_triton_matches_reference(device, kind, k, group, m):
    if device == "cpu" and not _dispatch.triton_interpret():
        pytest.skip("Triton on CPU tensors needs TRITON_INTERPRET=1")
    n = 24  # not a multiple of the 64-row tile: the edge rows are masked
    layout = make_layout(kind, n, k, seed=m + k, group=group or 32)
    layout = type(layout)(**{f: (v.to(device) if isinstance(v, torch.Tensor) else v)
                             for f, v in vars(layout).items()})
    x = torch.randn(m, k, generator=_gen(m)).to(device=device, dtype=torch.float16)
    bias = torch.randn(n, generator=_gen(m + 1)).to(device=device, dtype=torch.float16)
    got = packed_linear(x, layout, bias, backend="triton")
    want = packed_linear_reference(x, layout, bias)
    assert got.shape == (m, n) and got.dtype == torch.float16
    assert rel_err(got, want) < 1e-3


@pytest.mark.triton
def test_triton_fp32_and_batched_input():
    if not (_dispatch.triton_interpret() or torch.cuda.is_available()):
        pytest.skip("needs TRITON_INTERPRET=1 or a GPU")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    layout = make_layout("int4", 40, 64, seed=3)
    layout = Int4(layout.shape, layout.codes.to(device), layout.scales.to(device), None, layout.group_size)
    x = torch.randn(2, 3, 64, generator=_gen(4)).to(device)
    got = packed_linear(x, layout, backend="triton")
    assert got.shape == (2, 3, 40)
    assert rel_err(got, packed_linear_reference(x, layout)) < 1e-3


@pytest.mark.triton
@pytest.mark.parametrize("kind, group", [("semi24", 0), ("int4", 128), ("int4_semi24", 128), ("mxfp4", 32)])
@pytest.mark.parametrize("split_k", [2, 3, 5])
def test_triton_split_k_matches_reference(kind, group, split_k):
    if not (_dispatch.triton_interpret() or torch.cuda.is_available()):
        pytest.skip("needs TRITON_INTERPRET=1 or a GPU")
    from sparsekit.ops.backends.triton import operands, triton_linear

    device = "cuda" if torch.cuda.is_available() else "cpu"
    k = 576  # 5 tiles of 128 inputs (the last one partial) over 2, 3 or 5 slices
    layout = make_layout(kind, 40, k, seed=split_k, group=group or 32)
    layout = type(layout)(**{f: (v.to(device) if isinstance(v, torch.Tensor) else v) for f, v in vars(layout).items()})
    x = torch.randn(2, k, generator=_gen(split_k)).to(device=device, dtype=torch.float16)
    bias = torch.randn(40, generator=_gen(7)).to(device=device, dtype=torch.float16)
    got = triton_linear(x, operands(layout), bias, 40, k, split_k=split_k)
    assert got.dtype == torch.float16
    assert rel_err(got, packed_linear_reference(x, layout, bias)) < 1e-3


def test_autotuning_is_off_on_the_interpreter_and_on_request(monkeypatch):
    pytest.importorskip("triton")
    from sparsekit.kernels.packed_gemm import autotuning

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("SPARSEKIT_TRITON_AUTOTUNE", raising=False)
    cuda = torch.device("cuda")  # only the device's type is read: no GPU needed
    assert autotuning(cuda) and not autotuning(torch.device("cpu"))
    monkeypatch.setenv("SPARSEKIT_TRITON_AUTOTUNE", "0")
    assert not autotuning(cuda)
    monkeypatch.setenv("SPARSEKIT_TRITON_AUTOTUNE", "maybe")
    with pytest.raises(ValueError, match="SPARSEKIT_TRITON_AUTOTUNE must be 0 or 1"):
        autotuning(cuda)
    monkeypatch.setenv("SPARSEKIT_TRITON_AUTOTUNE", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not autotuning(cuda)


def test_device_and_dtype_errors():
    layout = make_layout("int4", 16, 64)
    with pytest.raises(ValueError, match="the input is on meta but the weight's codes is on cpu"):
        packed_linear(torch.empty(2, 64, device="meta"), layout)
    if _dispatch.triton_interpret():
        with pytest.raises(ValueError, match="interpreter has no bfloat16"):
            packed_linear(torch.randn(2, 64).bfloat16(), layout, backend="triton")
        semi = make_layout("semi24", 16, 64, dtype=torch.float32)
        with pytest.raises(ValueError, match="2:4 values are torch.float32 but the input is torch.float16"):
            packed_linear(torch.randn(2, 64).half(), semi, backend="triton")


@pytest.mark.triton
@pytest.mark.parametrize("kind, k, group", [("semi24", 8, 0), ("int4", 2, 0), ("int4_semi24", 8, 0), ("mxfp4", 32, 32)])
def test_triton_smallest_legal_shapes(kind, k, group):
    """N = 1 output row and the smallest K each layout allows (8 for 2:4 metadata bytes, 2 for int4 nibbles,
    32 for an MX block), M = 1."""
    if not (_dispatch.triton_interpret() or torch.cuda.is_available()):
        pytest.skip("needs TRITON_INTERPRET=1 or a GPU")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    layout = make_layout(kind, 1, k, seed=k, group=group or k)
    layout = type(layout)(**{f: (v.to(device) if isinstance(v, torch.Tensor) else v) for f, v in vars(layout).items()})
    x = torch.randn(1, k, generator=_gen(k)).to(device=device, dtype=torch.float16)
    got = packed_linear(x, layout, backend="triton")
    assert got.shape == (1, 1)
    assert rel_err(got, packed_linear_reference(x, layout)) < 1e-3


def test_mma_layouts_run_the_reference_off_gpu_and_refuse_triton():
    from sparsekit.ops.packed_linear import select_kernel
    from sparsekit.pack import Semi24, to_mma

    w = torch.randn(32, 128, generator=_gen(11))
    mask = nm_mask(w.abs(), 2, 4)
    dense = w.masked_fill(~mask, 0).half()
    layout = to_mma(Semi24.pack(dense, mask))
    x = torch.randn(3, 128, generator=_gen(12)).half()
    assert select_kernel(x, layout).backend == "reference"  # no CUDA tensor: the only kernel that can run
    # checked against the dense weight itself, not against the layout's own unpack
    want = (x.float() @ dense.float().T).half()
    torch.testing.assert_close(packed_linear(x, layout), want, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="has no triton kernel"):
        packed_linear(x, layout, backend="triton")
    with pytest.raises(ValueError, match="backend='cuda'"):
        packed_linear(x, layout, backend="cuda")


@pytest.mark.parametrize("m, want_block", [(1, 8), (9, 16), (16, 16), (33, 64), (65, 128), (4096, 128)])
def test_cuda_launch_config(m, want_block):
    from sparsekit.ops.backends.cuda import launch_config

    splits, block_m = launch_config(m, 4096, 4096, sm_count=132)
    assert block_m == want_block
    blocks = 64 * -(-m // block_m)
    # split-K only while fewer than four blocks per SM exist, never past the k-tiles or 16
    assert 1 <= splits <= 16 and (splits == 1 or blocks * (splits - 1) < 4 * 132)
    assert launch_config(1, 16, 64, sm_count=132)[0] == 1  # one k-tile: nothing to split
