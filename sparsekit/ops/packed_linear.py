"""packed_linear(x, layout, bias) = x @ W^T (+ bias) for a weight W stored in a packed layout.

One op over every layout of `sparsekit.pack` (2:4, int4, int4 + 2:4, MXFP4, and the mma.sp-order 2:4
layouts of `sparsekit.pack.mma_sp`) with the backend switch of DESIGN.md §3: the Triton kernels read
the plain layouts, the CUDA kernels of `sparsekit._C` (sparse tensor cores) the mma.sp-order ones.
The reference is the specification: unpack the layout to the dense weight it encodes, then a matmul
with fp32 accumulation, cast back to the activation dtype. Kernels must match it to a relative error
below 1e-3 for fp16 inputs (DESIGN.md §6).
"""

from __future__ import annotations

import torch

from sparsekit import _ext
from sparsekit.ops._dispatch import pick_backend
from sparsekit.pack.layouts import Layout
from sparsekit.pack.mma_sp import MMA_LAYOUTS, Int4Semi24MMA

ACTIVATION_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_inputs(x: torch.Tensor, layout: Layout, bias: torch.Tensor | None) -> None:
    """Shape, dtype and device checks shared by every backend; errors name the constraint."""
    n, k = layout.shape
    if x.shape[-1] != k:
        raise ValueError(f"packed_linear: input has {x.shape[-1]} features but the {layout.KIND} weight has "
                         f"in_features={k}")
    if x.dtype not in ACTIVATION_DTYPES:
        raise ValueError(f"packed_linear: activations must be float16/bfloat16/float32, got {x.dtype}")
    for name, t in layout.tensors().items():
        if t.device != x.device:
            raise ValueError(f"packed_linear: the input is on {x.device} but the weight's {name} is on {t.device}; "
                             "move the module with .to(device)")
    if bias is not None and (bias.shape != (n,) or bias.device != x.device):
        raise ValueError(f"packed_linear: bias must be a [{n}] tensor on {x.device}, got {tuple(bias.shape)} on "
                         f"{bias.device}")


def packed_linear_reference(x: torch.Tensor, layout: Layout, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The specification: unpack -> fp32 matmul -> activation dtype."""
    out = torch.nn.functional.linear(x.float(), layout.unpack().float(), None if bias is None else bias.float())
    return out.to(x.dtype)


def cuda_supports(x: torch.Tensor, layout: Layout) -> bool:
    """The compiled sparse-tensor-core kernels can run this call (else: fall back, or refuse 'cuda')."""
    if layout.KIND not in MMA_LAYOUTS or not x.is_cuda or not _ext.available():
        return False
    n, k = layout.shape
    if x.dtype not in (torch.float16, torch.bfloat16) or k % 64 or n % 16:
        return False
    if torch.cuda.get_device_capability(x.device) < (8, 0):  # mma.sp needs Ampere or newer
        return False
    if isinstance(layout, Int4Semi24MMA):
        return layout.group_size % 32 == 0
    return layout.values.dtype == x.dtype


def launch_config(m: int, n: int, k: int, sm_count: int) -> tuple[int, int]:
    """(splits, block_m) for the CUDA kernels: the smallest token tile that holds M (decode wastes
    at most half an mma n8 side), and split-K until about four blocks (16 warps) per SM are in flight.
    At M = 1 the kernel is bound by streaming the weight, and each warp keeps only one k-tile of it in
    flight (~1.3 KB), so filling the memory pipe (bandwidth x latency, ~25 KB per H100 SM) needs many
    resident warps; the fp32 partial sums this costs are M x N x splits floats, small at decode."""
    block_m = next((b for b in (8, 16, 32, 64) if m <= b), 128)
    blocks = -(-n // 64) * -(-m // block_m)
    splits = max(1, min(k // 64, -(-4 * sm_count // blocks), 16))
    return splits, block_m


def packed_linear_cuda(x: torch.Tensor, layout: Layout, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The sparse-tensor-core kernels of `sparsekit._C` (csrc/sparse24_gemm.cu)."""
    ext = _ext.load()
    n, k = layout.shape
    x2 = x.reshape(-1, k).contiguous()
    if x2.data_ptr() % 16:
        x2 = x2.clone()
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    splits, block_m = launch_config(x2.shape[0], n, k, sms)
    b = None if bias is None else bias.to(x.dtype).contiguous()
    if isinstance(layout, Int4Semi24MMA):
        out = ext.int4_sparse24_gemm(x2, layout.codes, layout.meta, layout.scales, layout.group_size, b, splits,
                                     block_m)
    else:
        out = ext.sparse24_gemm(x2, layout.values, layout.meta, b, splits, block_m)
    return out.reshape(*x.shape[:-1], n)


def packed_linear(x: torch.Tensor, layout: Layout, bias: torch.Tensor | None = None, *,
                  backend: str = "auto") -> torch.Tensor:
    """`x` (`[..., K]`) times the packed `[N, K]` weight, transposed; returns `[..., N]` in x's dtype."""
    check_inputs(x, layout, bias)
    mma = layout.KIND in MMA_LAYOUTS
    chosen = pick_backend(f"packed_linear[{layout.KIND}]", backend, x, has_cuda=mma,
                          cuda_ok=mma and cuda_supports(x, layout), has_triton=not mma)
    if chosen == "cuda":
        return packed_linear_cuda(x, layout, bias)
    if chosen == "triton":
        from sparsekit.kernels.packed_gemm import packed_linear as triton_packed_linear

        return triton_packed_linear(x, layout, bias)
    return packed_linear_reference(x, layout, bias)
