"""The reference backend: the specification every other kernel is tested against, for every layout.

Unpack the layout to the dense weight it encodes, multiply in fp32, cast back to the activation dtype.
Kernels must match it to a relative error below 1e-3 for fp16 inputs (docs/ARCHITECTURE.md §6). It is registered
on the `Layout` base class, so a new layout runs (slowly) before it has a kernel of its own.
"""

from __future__ import annotations

import torch

from sparsekit.pack.layouts import Layout


@Layout.register_kernel("reference")
def packed_linear_reference(x: torch.Tensor, layout: Layout, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The specification: unpack -> fp32 matmul -> activation dtype."""
    out = torch.nn.functional.linear(x.float(), layout.unpack().float(), None if bias is None else bias.float())
    return out.to(x.dtype)
