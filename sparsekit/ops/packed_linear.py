"""packed_linear(x, layout, bias) = x @ W^T (+ bias) for a weight W stored in a packed layout.

One op over every layout of `sparsekit.pack.layouts` (2:4, int4, int4 + 2:4, MXFP4) with the backend
switch of DESIGN.md §3. The reference is the specification: unpack the layout to the dense weight it
encodes, then a matmul with fp32 accumulation, cast back to the activation dtype. Kernels must match it
to a relative error below 1e-3 for fp16 inputs (DESIGN.md §6).
"""

from __future__ import annotations

import torch

from sparsekit.ops._dispatch import pick_backend
from sparsekit.pack.layouts import Layout

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


def packed_linear(x: torch.Tensor, layout: Layout, bias: torch.Tensor | None = None, *,
                  backend: str = "auto") -> torch.Tensor:
    """`x` (`[..., K]`) times the packed `[N, K]` weight, transposed; returns `[..., N]` in x's dtype."""
    check_inputs(x, layout, bias)
    chosen = pick_backend(f"packed_linear[{layout.KIND}]", backend, x)
    if chosen == "triton":
        from sparsekit.kernels.packed_gemm import packed_linear as triton_packed_linear

        return triton_packed_linear(x, layout, bias)
    return packed_linear_reference(x, layout, bias)
