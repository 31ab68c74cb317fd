"""The CUDA backend: the sparse-tensor-core kernels of `sparsekit._C` (csrc/sparse24_gemm.cu).

They read the 2:4 layouts in mma.sp register order (`sparsekit.pack.mma_sp`); the binding checks
shapes again and explains its errors, `supports` here keeps `auto` from ever reaching them.
"""

from __future__ import annotations

import torch

from sparsekit import _ext
from sparsekit.pack.mma_sp import Int4Semi24MMA, Semi24MMA


def _device_unfit(x: torch.Tensor, n: int, k: int) -> str | None:
    if not x.is_cuda:
        return "the input is not a CUDA tensor"
    if not _ext.available():
        return "sparsekit._C is not built (install on a CUDA machine with --no-build-isolation)"
    if x.dtype not in (torch.float16, torch.bfloat16):
        return f"the sparse tensor cores take float16/bfloat16 activations, got {x.dtype}"
    if k % 64 or n % 16:
        return f"the kernels need in_features % 64 == 0 and out_features % 16 == 0, got {n} x {k}"
    if torch.cuda.get_device_capability(x.device) < (8, 0):
        return "mma.sp needs an Ampere (sm_80) or newer GPU"
    return None


def launch_config(m: int, n: int, k: int, sm_count: int) -> tuple[int, int]:
    """(splits, block_m) for the CUDA kernels: the smallest token tile that holds M (decode wastes
    at most half an mma n8 side), and split-K until about four blocks (16 warps) per SM are in flight.
    At M = 1 the kernel is bound by streaming the weight, and each warp keeps ~1.3-1.5 KB of it in flight
    (one k-tile of fp16 values, or four of int4 codes: `kWAhead` in the .cu), so filling the memory pipe
    (bandwidth x latency, ~25 KB per H100 SM) needs many resident warps; the fp32 partial sums this
    costs are M x N x splits floats, small at decode."""
    block_m = next((b for b in (8, 16, 32, 64) if m <= b), 128)
    blocks = -(-n // 64) * -(-m // block_m)
    splits = max(1, min(k // 64, -(-4 * sm_count // blocks), 16))
    return splits, block_m


def _gemm(fn_name: str, x: torch.Tensor, layout, bias: torch.Tensor | None, *operands) -> torch.Tensor:
    """Call `sparsekit._C.<fn_name>(x2, *operands, bias, splits, block_m)` on the [M, K] view of `x`."""
    n, k = layout.shape
    x2 = x.reshape(-1, k).contiguous()
    if x2.shape[0] == 0:  # no tokens: no tiles to launch (and no split-K to size)
        return x.new_empty((*x.shape[:-1], n))
    if x2.data_ptr() % 16:  # cp.async moves 16-byte chunks
        x2 = x2.clone()
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    splits, block_m = launch_config(x2.shape[0], n, k, sms)
    b = None if bias is None else bias.to(x.dtype).contiguous()
    out = getattr(_ext.load(), fn_name)(x2, *operands, b, splits, block_m)
    return out.reshape(*x.shape[:-1], n)


def _semi24_unfit(x: torch.Tensor, layout: Semi24MMA) -> str | None:
    why = _device_unfit(x, *layout.shape)
    if why is None and layout.values.dtype != x.dtype:
        why = f"2:4 values are {layout.values.dtype} but the input is {x.dtype}"
    return why


@Semi24MMA.register_kernel("cuda", _semi24_unfit)
def semi24_mma(x: torch.Tensor, layout: Semi24MMA, bias: torch.Tensor | None = None) -> torch.Tensor:
    return _gemm("sparse24_gemm", x, layout, bias, layout.values, layout.meta)


def _int4_unfit(x: torch.Tensor, layout: Int4Semi24MMA) -> str | None:
    why = _device_unfit(x, *layout.shape)
    if why is None and layout.group_size % 32:  # a layout rebuilt from stored tensors was never re-checked
        why = f"group_size must be a multiple of 32 (one scale per mma k-step), got {layout.group_size}"
    return why


@Int4Semi24MMA.register_kernel("cuda", _int4_unfit)
def int4_semi24_mma(x: torch.Tensor, layout: Int4Semi24MMA, bias: torch.Tensor | None = None) -> torch.Tensor:
    return _gemm("int4_sparse24_gemm", x, layout, bias, layout.codes, layout.meta, layout.scales, layout.group_size)
