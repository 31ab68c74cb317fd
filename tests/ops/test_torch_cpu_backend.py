"""The opt-in backend 'torch_cpu': torch's weight-only CPU kernels on the int8 and int4 layouts.

Thresholds: torch's kernels accumulate the same dequantized fp32 products as the reference in another
order, so float32 agrees to a few fp32 roundings of each sum (1e-5 relative: ~100 ulps of headroom);
bfloat16 activations go through torch's bf16 kernels, which round the scales (and for int4 the zeros)
to bf16 too (2^-8 relative each) and the output once: 2e-2.
"""

from __future__ import annotations

import pytest
import torch

from sparsekit.ops.backends import torch_cpu
from sparsekit.ops.packed_linear import explain, packed_linear, packed_linear_reference, select_kernel
from sparsekit.pack import Int4, Int8
from sparsekit.quant.formats import get_format

TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def make(kind: str, n: int, k: int, *, group: int = 128, symmetric: bool = True, seed: int = 0):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.1
    if kind == "int4":
        return Int4.pack(get_format("int4", group, symmetric).quantize(w))
    q = get_format("int8").quantize(w)
    return Int8(q.shape, q.codes.to(torch.int8), q.scales.reshape(-1).half())


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


CASES = [("int8", {}), ("int4", {"group": 128}), ("int4", {"group": 32, "symmetric": False}),
         ("int4", {"group": 256, "symmetric": False})]


@pytest.mark.parametrize("kind, opts", CASES, ids=[f"{k}-{'-'.join(map(str, o.values()))}" for k, o in CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m", [1, 3, 16, 33])
def test_matches_the_reference(kind, opts, dtype, m):
    layout = make(kind, 48, 512, **opts)
    x = torch.randn(m, 512).to(dtype)
    bias = torch.randn(48)
    got = packed_linear(x, layout, bias, backend="torch_cpu")
    want = packed_linear_reference(x, layout, bias)
    assert got.dtype == dtype and got.shape == (m, 48)
    assert rel(got, want) < TOL[dtype]


def test_batched_non_contiguous_inputs_and_asymmetric_zero_points():
    """Zero points map to torch's additive zeros ((8 - z) * scale): a wrong sign or offset fails here."""
    layout = make("int4", 32, 256, group=64, symmetric=False, seed=3)
    assert layout.zeros is not None and bool((layout.zeros != 8).any())
    x = torch.randn(2, 5, 512)[..., ::2]  # strided last dimension
    got = packed_linear(x, layout, backend="torch_cpu")
    assert got.shape == (2, 5, 32)
    assert rel(got, packed_linear_reference(x, layout)) < 1e-5


def test_repacked_int4_is_made_once_per_codes_tensor_and_follows_in_place_changes():
    layout = make("int4", 16, 256)
    x = torch.randn(2, 256)
    packed_linear(x, layout, backend="torch_cpu")
    first = torch_cpu._INT4_PACKS[layout.codes][1]
    packed_linear(x, layout, backend="torch_cpu")
    assert torch_cpu._INT4_PACKS[layout.codes][1] is first
    layout.codes.copy_(make("int4", 16, 256, seed=9).codes)  # an in-place load of other weights
    got = packed_linear(x, layout, backend="torch_cpu")
    assert torch_cpu._INT4_PACKS[layout.codes][1] is not first
    assert rel(got, packed_linear_reference(x, layout)) < 1e-5


def test_auto_never_takes_it_and_the_constraints_are_named():
    layout = make("int4", 16, 576, group=128)  # K = 576: a short last group torch's kernel cannot take
    x = torch.randn(1, 576)
    assert select_kernel(x, make("int4", 16, 512), "auto").backend != "torch_cpu"
    assert "dividing in_features" in explain(x, layout)["torch_cpu"]
    with pytest.raises(ValueError, match="group_size 128 for in_features 576"):
        packed_linear(x, layout, backend="torch_cpu")
    with pytest.raises(ValueError, match="out_features % 16 == 0 is needed, got 24"):
        packed_linear(torch.randn(1, 512), make("int4", 24, 512), backend="torch_cpu")
    with pytest.raises(ValueError, match="float32/bfloat16 activations"):
        packed_linear(torch.randn(1, 512, dtype=torch.float16), make("int4", 16, 512), backend="torch_cpu")
    with pytest.raises(ValueError, match="has no torch_cpu kernel"):
        from sparsekit.pack import MXFP4
        packed_linear(torch.randn(1, 64), MXFP4.pack(get_format("mxfp4").quantize(torch.randn(8, 64))),
                      backend="torch_cpu")
