"""The Triton backend: one packed GEMM (`sparsekit.kernels.packed_gemm`) for the plain layouts.

Each registration says which operands the kernel streams for a layout: the packed weight stream, the
2:4 metadata, the group scales / zero points, and what the stream holds (plain values, int4 nibbles or
E2M1 nibbles). Triton itself is imported on the first call, not here.
"""

from __future__ import annotations

from typing import Callable

import torch

from sparsekit.ops._dispatch import triton_unusable
from sparsekit.pack.layouts import MXFP4, Int4, Int4Semi24, Layout, Semi24


def usable(x: torch.Tensor) -> str | None:
    """Why Triton cannot run on this tensor, or None (the interpreter has no bfloat16)."""
    why = triton_unusable(x)
    if why is None and x.dtype == torch.bfloat16 and not x.is_cuda:
        why = "the CPU interpreter has no bfloat16; use float16/float32 there"
    return why


def triton_linear(x: torch.Tensor, operands: dict, bias: torch.Tensor | None, n: int, k: int,
                  split_k: int | None = None) -> torch.Tensor:
    from sparsekit.kernels.packed_gemm import packed_gemm

    return packed_gemm(x, bias=bias, n=n, k=k, split_k=split_k, **operands)


def register(layout: type[Layout], operands: Callable[[Layout], dict],
             check: Callable[[torch.Tensor, Layout], str | None] | None = None) -> None:
    """Register the packed GEMM as `layout`'s Triton kernel; `operands(layout)` -> packed_gemm's keywords."""
    _OPERANDS[layout] = operands

    def supports(x: torch.Tensor, lay: Layout) -> str | None:
        return usable(x) or (check(x, lay) if check else None)

    @layout.register_kernel("triton", supports)
    def kernel(x: torch.Tensor, lay: Layout, bias: torch.Tensor | None = None) -> torch.Tensor:
        return triton_linear(x, operands(lay), bias, *lay.shape)


_OPERANDS: dict[type[Layout], Callable[[Layout], dict]] = {}


def operands(layout: Layout) -> dict:
    """packed_gemm's keywords for a registered layout (tests call the kernel with explicit split-K)."""
    return _OPERANDS[type(layout)](layout)


def _same_dtype(x: torch.Tensor, layout: Semi24) -> str | None:
    if layout.values.dtype != x.dtype:
        return f"2:4 values are {layout.values.dtype} but the input is {x.dtype}; convert the module with .to(dtype)"
    return None


register(Semi24, lambda w: dict(stream=w.values, meta=w.meta, sparse=True, weight="values"), _same_dtype)
register(Int4, lambda w: dict(stream=w.codes, scales=w.scales, zeros=w.zeros, group=w.group_size, weight="int4"))
register(Int4Semi24, lambda w: dict(stream=w.codes, meta=w.meta, scales=w.scales, zeros=w.zeros, group=w.group_size,
                                    sparse=True, weight="int4"))
register(MXFP4, lambda w: dict(stream=w.codes, scales=w.scales, group=32, weight="e2m1"))  # an E8M0 scale per 32
