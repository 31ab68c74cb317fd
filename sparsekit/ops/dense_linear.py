"""dense_linear(x, weight, bias) = x @ W^T (+ bias) for a plain (dense) weight: `F.linear`, with a CPU decode kernel.

The torch custom op `sparsekit::dense_linear`, what `sparsekit.nn.DenseLinear` runs. Its definition here is
`F.linear` (every device, every dtype, any number of tokens). Once `sparsekit._cpu` is loaded, its C++ kernel
serves CPU tensors (csrc/cpu/binding.cpp, `dense_linear_cpu`): decode calls (up to 16 tokens) of a contiguous
float32 or bfloat16 weight, the input (and bias) of its dtype, on a CPU with AVX2 stream W with all of torch's
threads (csrc/cpu/gemv_dense.cpp; bf16 summed in fp32 and rounded once, as `F.linear` on bf16 does); longer bf16
calls on a CPU without AVX512_BF16 multiply in fp32 (torch's bf16 matmul is 4-5x slower there on Zen 3); the rest is
`at::linear`. Not a packed layout: the weight is the module's own parameter (a tied LM head stays tied).

An inference op: `DenseLinear` calls `F.linear` itself whenever autograd records (the op has no backward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsekit import _ext


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if weight.dim() != 2:
        raise ValueError(f"dense_linear: the weight must be [out_features, in_features], got {tuple(weight.shape)}")
    if x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"dense_linear: input has {x.shape[-1] if x.dim() else 0} features but the weight has "
                         f"in_features={weight.shape[1]}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"dense_linear: bias must be a [{weight.shape[0]}] tensor, got {tuple(bias.shape)}")


@torch.library.custom_op("sparsekit::dense_linear", mutates_args=())
def _dense_linear_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # F.linear never returns a view of its inputs (a custom op's output may not alias them)
    _check(x, weight, bias)
    return F.linear(x, weight, bias)


@_dense_linear_op.register_fake
def _dense_linear_fake(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    _check(x, weight, bias)
    return x.new_empty((*x.shape[:-1], weight.shape[0]), dtype=torch.promote_types(x.dtype, weight.dtype))


def dense_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`x` (`[..., K]`) times `weight` (`[N, K]`) transposed (+ `bias`): `F.linear`'s result, through the CPU
    decode kernel where it serves the call (module docstring). Loads `sparsekit._cpu` on the first call.
    Raises ValueError naming the constraint for mismatched shapes (the C++ kernel would leave that to
    at::linear's message)."""
    _check(x, weight, bias)
    if not torch.compiler.is_compiling():  # (traced, the op is a graph node: loaded by the eager calls before)
        _ext.cpu_available()
    return torch.ops.sparsekit.dense_linear(x, weight, bias)


def cpu_dense_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     path: str = "auto") -> torch.Tensor:
    """The C++ kernel itself on any number of tokens (tests and benchmarks): `path` 'auto' (AVX2 + FMA where
    the CPU has it, else scalar) | 'avx2' | 'scalar' (the reference loop); float32, or bfloat16 input and weight
    (an fp32 sum of their exact values, rounded to bf16 once). Raises RuntimeError
    naming the constraint for other inputs, and where sparsekit._cpu is not built."""
    ext = _ext.load_cpu()
    if ext is None:
        raise RuntimeError("dense_linear[cpu]: sparsekit._cpu is not built (reinstall with a C++ compiler: "
                           "pip install --no-build-isolation -e .)")
    return ext.dense_linear(x, weight, bias, path)


__all__ = ["cpu_dense_linear", "dense_linear"]
