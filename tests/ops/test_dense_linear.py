"""sparsekit::dense_linear: F.linear with sparsekit's CPU GEMV (fp32, bf16) at decode, and `DenseLinear` /
`use_dense_kernels`.

Thresholds: every path sums K fp32 products in some order, so the error against a float64 reference is bounded by
about K x 2^-24 x sum |x_k w_k| (the classic bound of a recursive sum; the SIMD paths' pairwise lanes do
better). The tests compare against sum |x||w| with 1e-6 x K relative room, i.e. ~17x the bound's constant. bf16
inputs are exact in fp32, so the same sum is then rounded to bf16 once: half a bf16 ulp more, at most 2^-9 of
the result (8 significant bits), allowed as 2^-8 |result|."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sparsekit
from sparsekit import _ext
from sparsekit.errors import SparsekitError
from sparsekit.eval.size import lm_head_precision
from sparsekit.nn import DenseLinear, use_dense_kernels
from sparsekit.ops.dense_linear import dense_linear
from tests.ops.test_cpu_kernels import HAS_AVX2, _gen, at_threads
from tests.tiny import tiny_model

if not _ext.cpu_available():
    if os.environ.get("SPARSEKIT_REQUIRE_CPU_EXT") == "1":
        raise RuntimeError("sparsekit._cpu is not built but SPARSEKIT_REQUIRE_CPU_EXT=1")
    pytest.skip("sparsekit._cpu not built (no C++ compiler at install time)", allow_module_level=True)

from sparsekit.ops.dense_linear import cpu_dense_linear  # noqa: E402

PATHS = ["scalar", pytest.param("avx2", marks=pytest.mark.skipif(not HAS_AVX2, reason="needs AVX2"))]


def within_sum_bound(got: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> None:
    assert got.dtype == x.dtype
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    scale = x.double().abs() @ w.double().abs().T + (0 if b is None else b.double().abs())
    k = w.shape[1]
    err = (got.double() - ref).abs()
    rounding = 2.0**-8 * ref.abs() if got.dtype == torch.bfloat16 else 0.0  # the one rounding to bf16
    assert bool((err <= scale * (1e-6 * k) + rounding + 1e-30).all()), float((err / scale).max())


# rows of < 4 KiB go one at a time, longer ones four at a time (gemv_dense.cpp: fp32 from 1024 inputs, bf16 from
# 2048); tails of 1-15 inputs; token tiles of 4 / 3 / 2 / 1 (one row) and 2 / 1 (four rows); rows left over after
# the fours; K = 1
SHAPES = [(1, 1), (3, 5), (7, 16), (33, 17), (64, 576), (13, 1024), (130, 1030), (9, 2047), (6, 2048), (11, 2061)]
DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n,k", SHAPES)
def test_kernel_matches_linear(path, n, k, dtype):
    w = torch.randn(n, k, generator=_gen(n * 1000 + k)).to(dtype)
    b = torch.randn(n, generator=_gen(1)).to(dtype)
    for m in (1, 2, 3, 4, 5, 7, 16, 33):
        x = torch.randn(m, k, generator=_gen(m)).to(dtype)
        within_sum_bound(cpu_dense_linear(x, w, b, path), x, w, b)
        within_sum_bound(cpu_dense_linear(x, w, None, path), x, w, None)


def test_bf16_is_the_fp32_sum_rounded_once():
    """A bf16 weight is its exact fp32 value to the kernel: the result is the fp32 kernel's on the widened tensors,
    rounded to bf16 (the same bits), on every path."""
    w = torch.randn(37, 600, generator=_gen(16)).bfloat16()
    b = torch.randn(37, generator=_gen(17)).bfloat16()
    x = torch.randn(5, 600, generator=_gen(18)).bfloat16()
    for path in ["scalar"] + (["avx2"] if HAS_AVX2 else []):
        want = cpu_dense_linear(x.float(), w.float(), b.float(), path).bfloat16()
        assert torch.equal(cpu_dense_linear(x, w, b, path), want)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_split_rows_exactly(threads, dtype):
    """Each output is one row's sum, whichever thread computes it: the same bits at any thread count."""
    w = torch.randn(301, 2100, generator=_gen(3)).to(dtype)
    x = torch.randn(2, 2100, generator=_gen(4)).to(dtype)
    one = at_threads(1, lambda: cpu_dense_linear(x, w))
    assert torch.equal(at_threads(threads, lambda: cpu_dense_linear(x, w)), one)


def test_op_decode_and_fallbacks():
    """The op on the CPU: the kernel up to 16 tokens (float32, bfloat16), F.linear otherwise; batch dims and
    non-contiguous inputs kept; results within the sum bound in every case, and F.linear's bits where it falls
    back."""
    w = torch.randn(40, 96, generator=_gen(5))
    b = torch.randn(40, generator=_gen(6))
    x = torch.randn(2, 3, 96, generator=_gen(7))
    y = dense_linear(x, w, b)
    assert y.shape == (2, 3, 40) and y.dtype == torch.float32
    within_sum_bound(y.reshape(6, 40), x.reshape(6, 96), w, b)
    xt = torch.randn(96, 5, generator=_gen(8)).T  # non-contiguous [5, 96]
    within_sum_bound(dense_linear(xt, w, b), xt.contiguous(), w, b)
    big = torch.randn(17, 96, generator=_gen(9))  # past 16 tokens: at::linear itself
    assert torch.equal(dense_linear(big, w, b), F.linear(big, w, b))
    xb, wb, bb = x.bfloat16(), w.bfloat16(), b.bfloat16()  # bf16: the kernel, a bf16 result
    within_sum_bound(dense_linear(xb, wb, bb).reshape(6, 40), xb.reshape(6, 96), wb, bb)
    bigb = big.bfloat16()
    if _ext.cpu_info().get("bf16_dot"):  # past 16 tokens: torch's bf16 matmul, which has bf16 instructions here
        assert torch.equal(dense_linear(bigb, wb, bb), F.linear(bigb, wb, bb))
    else:  # without them: the exact fp32 values multiplied in fp32 (one tile of rows here), rounded once
        want = torch.mm(bigb.float(), wb.float().t()).add_(bb.float()).bfloat16()
        assert torch.equal(dense_linear(bigb, wb, bb), want)
    xh, wh = x.half(), w.half()  # fp16: F.linear
    assert torch.equal(dense_linear(xh, wh), F.linear(xh, wh))
    with pytest.raises(RuntimeError):  # mixed dtypes: F.linear's own error, as without sparsekit
        dense_linear(x, wb)
    wt = torch.randn(96, 40, generator=_gen(10)).T  # a non-contiguous weight: F.linear
    assert torch.equal(dense_linear(x, wt), F.linear(x, wt))


def test_errors_name_the_constraint():
    w = torch.randn(8, 32)
    with pytest.raises(ValueError, match="input has 31 features but the weight has in_features=32"):
        dense_linear(torch.randn(1, 31), w)
    with pytest.raises(ValueError, match=r"bias must be a \[8\] tensor"):
        dense_linear(torch.randn(1, 32), w, torch.randn(7))
    with pytest.raises(RuntimeError, match="must be a contiguous float32 or bfloat16"):
        cpu_dense_linear(torch.randn(1, 32), w.half())
    with pytest.raises(RuntimeError, match=r"input must be a float32 CPU tensor \(the weight's dtype\), got float64"):
        cpu_dense_linear(torch.randn(1, 32).double(), w)
    with pytest.raises(RuntimeError, match="input must be a bfloat16 CPU tensor"):
        cpu_dense_linear(torch.randn(1, 32), w.bfloat16())
    with pytest.raises(RuntimeError, match="path must be 'auto', 'avx2' or 'scalar'"):
        cpu_dense_linear(torch.randn(1, 32), w, None, "avx512")


def test_compiles_as_one_op():
    """Under torch.compile(fullgraph=True) the op is one node whose fake gives the shape; the result matches eager."""
    w = torch.randn(24, 64, generator=_gen(11))
    x = torch.randn(1, 64, generator=_gen(12))
    f = torch.compile(lambda t: dense_linear(t, w) * 2, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert torch.equal(f(x), dense_linear(x, w) * 2)


def test_use_dense_kernels_head_keeps_the_tie_and_the_logits():
    model = tiny_model("llama", tie_word_embeddings=True)
    ids = torch.randint(3, 300, (1, 5), generator=_gen(13))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert use_dense_kernels(model, "head") == ["lm_head"]
    assert type(model.lm_head) is DenseLinear and model.lm_head.weight is model.model.embed_tokens.weight
    assert lm_head_precision(model) == "float32 (tied, sparsekit GEMV)"
    assert model.state_dict().keys() == state.keys()
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert torch.allclose(after, before, rtol=1e-5, atol=1e-5)
    assert use_dense_kernels(model, "head") == []  # already swapped: nothing left to do
    moved = copy.deepcopy(model).to("meta")  # moved off the CPU after the swap: F.linear, and said so
    assert lm_head_precision(moved).startswith("float32 (") and "GEMV" not in lm_head_precision(moved)
    assert moved.lm_head(torch.empty(2, 64, device="meta")).shape == (2, 300)


def test_use_dense_kernels_all_and_training():
    """'all' swaps every plain fp32 or bf16 Linear on the CPU (not fp16 ones); gradients flow through F.linear."""
    model = tiny_model("llama")
    names = use_dense_kernels(model, "all")
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert names == linears and all(type(m) is DenseLinear for m in model.modules() if isinstance(m, nn.Linear))
    ids = torch.randint(3, 300, (1, 4), generator=_gen(14))
    model(input_ids=ids).logits.sum().backward()
    assert model.lm_head.weight.grad is not None and model.model.layers[0].mlp.up_proj.weight.grad is not None
    bf16 = tiny_model("llama").bfloat16()
    assert use_dense_kernels(bf16, "all") == linears
    assert lm_head_precision(bf16).startswith("bfloat16 (") and lm_head_precision(bf16).endswith(", sparsekit GEMV)")
    assert use_dense_kernels(tiny_model("llama").half(), "all") == []
    with pytest.raises(SparsekitError, match="which must be one of head, all"):
        use_dense_kernels(model, "heads")


def test_checkpoint_load_runs_the_head_on_the_gemv(tmp_path):
    """A converted, saved and loaded model: its fp32 head is a DenseLinear after convert and after load
    (sparsekit.load and load_model), and the checkpoint stores a plain nn.Linear's tensors."""
    from sparsekit.models.loader import load_model
    from tests.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok))
    result = sparsekit.convert(model, [{"quantize": {"format": "int4", "group_size": 32}}], tok, progress=False)
    assert type(result.model.lm_head) is DenseLinear
    sparsekit.save(result, tmp_path / "c", tokenizer=tok)
    loaded, _ = sparsekit.load(tmp_path / "c")
    again, _ = load_model(tmp_path / "c")
    assert type(loaded.lm_head) is DenseLinear and type(again.lm_head) is DenseLinear
    ids = torch.randint(3, len(tok), (1, 6), generator=_gen(15))
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, result.model(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
