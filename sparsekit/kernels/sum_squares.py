"""Column sum of squares: out[k] = sum_t x[t, k]^2, accumulated in fp32.

This is the activation statistic of Wanda (||X_j||_2^2 per input channel) that the calibration
engine accumulates for every Linear. Each program owns BLOCK_K columns and walks the token axis in
BLOCK_T-row tiles, so every x element is read once with coalesced loads along K (x is row-major,
K contiguous) and no atomics are needed: the reduction over T stays inside one program.

Reference: `sparsekit.ops.sum_squares.sum_squares_reference`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _sum_squares_kernel(x_ptr, out_ptr, T, K, stride_t, stride_k,
                        BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    offs_k = pid * BLOCK_K + tl.arange(0, BLOCK_K)
    k_mask = offs_k < K
    acc = tl.zeros([BLOCK_K], dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        offs_t = t0 + tl.arange(0, BLOCK_T)
        mask = (offs_t[:, None] < T) & k_mask[None, :]
        x = tl.load(x_ptr + offs_t[:, None] * stride_t + offs_k[None, :] * stride_k, mask=mask, other=0.0)
        x = x.to(tl.float32)
        acc += tl.sum(x * x, axis=0)
    tl.store(out_ptr + offs_k, acc, mask=k_mask)


def sum_squares(x: torch.Tensor, *, block_t: int = 64, block_k: int = 64) -> torch.Tensor:
    """Triton column sum of squares of a 2-D float tensor `[T, K]`; returns fp32 `[K]`."""
    # 1. check
    if x.dim() != 2:
        raise ValueError(f"sum_squares expects a 2-D [tokens, features] tensor, got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"sum_squares supports float16/bfloat16/float32, got {x.dtype}")
    T, K = x.shape
    # 2. allocate
    out = torch.empty(K, dtype=torch.float32, device=x.device)
    if K == 0:
        return out
    # 3. launch
    grid = (triton.cdiv(K, block_k),)
    _sum_squares_kernel[grid](x, out, T, K, x.stride(0), x.stride(1), BLOCK_T=block_t, BLOCK_K=block_k)
    return out
