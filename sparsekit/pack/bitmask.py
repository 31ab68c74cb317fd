"""Bit-packed boolean masks: 8 mask entries per byte (LSB first), 1/8 of the bytes of a bool tensor."""

from __future__ import annotations

import torch

_SHIFTS = torch.arange(8, dtype=torch.uint8)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Flatten a bool mask and pack it into `ceil(numel / 8)` uint8 bytes (padding bits are 0)."""
    if mask.dtype != torch.bool:
        raise ValueError(f"pack_mask expects a bool tensor, got {mask.dtype}")
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8) << _SHIFTS.to(flat.device)).sum(dim=1, dtype=torch.uint8)


def unpack_mask(packed: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Inverse of `pack_mask` for a mask of `shape`."""
    numel = 1
    for s in shape:
        numel *= int(s)
    if packed.dtype != torch.uint8 or packed.numel() != (numel + 7) // 8:
        raise ValueError(f"packed mask has {packed.numel()} {packed.dtype} bytes; a mask of shape {tuple(shape)} "
                         f"needs {(numel + 7) // 8} uint8 bytes")
    bits = (packed.reshape(-1, 1) >> _SHIFTS.to(packed.device)) & 1
    return bits.reshape(-1)[:numel].bool().reshape(shape)
