"""The opt-in backend 'cpu_a8': int4, int4 + 2:4 and MXFP4 weights times int8 activation blocks.

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
from tests.ops.test_cpu_kernels import _gen, make, rel

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
# not a multiple of 128 (32, 64: the per-group loop), per-channel (one group per row)
CASES = [("int4", {"group": 128}), ("int4", {"group": 32, "symmetric": False}), ("int4", {"group": 64}),
         ("int4", {"group": 576}), ("int4_semi24", {"group": 128}),
         ("int4_semi24", {"group": 32, "symmetric": False}), ("int4_semi24", {"group": 64}), ("mxfp4", {})]


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


@pytest.mark.parametrize("kind", ["int4", "int4_semi24", "mxfp4"])
def test_smallest_shapes_and_strided_inputs(kind):
    """K = 32 (one activation block, one chunk shorter than a vector), N = 1, and a strided input."""
    for n, k in ((1, 32), (3, 96), (5, 4096)):
        layout = make(kind, n, k, group=32) if kind != "mxfp4" else make(kind, n, k)
        base = torch.randn(2, 4, 2 * k, generator=_gen(k))
        x = base[..., ::2]
        assert not x.is_contiguous()
        got = packed_linear(x, layout, backend="cpu_a8")
        want = packed_linear_reference(q8_blocks(x.reshape(-1, k)), layout).reshape(2, 4, n)
        assert rel(got, want) < 1e-5


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
    layout = make("int8", 8, 576)
    t = layout.tensors()
    with pytest.raises(RuntimeError, match="int8 activations .a8. serve the int4, int4 . 2:4 and MXFP4 layouts only"):
        ext.linear(x, 4, 8, 576, codes=t["codes"], scales=t["scales"], acts="int8")
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
