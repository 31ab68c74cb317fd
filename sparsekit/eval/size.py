"""True storage accounting: what the weights occupy, and how sparse the prunable projections are."""

from __future__ import annotations

import torch

from sparsekit.models.adapters import Adapter


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of every tensor the model would save (parameters and persistent buffers: packed values,
    metadata and scales included), counting tied / shared storage once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for tensor in model.state_dict(keep_vars=True).values():
        if tensor.device.type == "meta":
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        total += tensor.numel() * tensor.element_size()
    return total


def projection_sparsity(adapter: Adapter) -> float:
    """Fraction of exact zeros over the weights of every block projection (the prunable Linears)."""
    zeros = total = 0
    for i in range(adapter.num_blocks):
        for linear in adapter.linears(i).values():
            w = linear.weight
            zeros += int((w == 0).sum())
            total += w.numel()
    return zeros / total if total else 0.0
