"""The opt-in backend 'torch_cpu': torch's own weight-only CPU kernels on the int8 and int4 layouts.

`torch.ops.aten._weight_int8pack_mm` (per-channel int8 codes, scales in the activations' dtype) and
`torch.ops.aten._weight_int4pack_mm_for_cpu` (int4 in torch's own packed order, rows in blocks of 16,
groups of 32 / 64 / 128 / 256 that divide K). They are what torch users have without sparsekit and the
baselines of the kernel benchmark (bench/kernels/bench_cpu_gemm.py), which measured them slower than the
'cpu' kernels on every shape (int4: ~27x at one token): `auto` never takes them, a user may name them. Same arithmetic as the reference to rounding (fp32 accumulation of dequantized weights).

torch's int4 dequantizes `(q - 8) * scale + zero` from unsigned nibbles; `Int4` stores symmetric codes + 8
(zero 0) or asymmetric codes with integer zero points z (`(q - z) * scale`, so zero = (8 - z) * scale).
The repacked weight (torch's order, `_convert_weight_to_int4pack_for_cpu`) is made on the first call and
kept beside the layout's codes tensor for as long as that tensor lives: one extra copy of the int4 bytes.
"""

from __future__ import annotations

import torch
from torch.utils.weak import WeakIdKeyDictionary

from sparsekit.pack.int8 import Int8
from sparsekit.pack.layouts import Int4, unpack_nibbles

#: group sizes torch's int4 CPU kernel takes (aten/src/ATen/native/LinearAlgebra.cpp: _weight_int4pack_mm_cpu)
INT4_GROUPS = (32, 64, 128, 256)
DTYPES = (torch.float32, torch.bfloat16)

#: codes tensor -> (its version counter when repacked, torch's packed int4, {dtype: scales_and_zeros})
_INT4_PACKS = WeakIdKeyDictionary()  # by identity: a tensor's == is elementwise


def unusable(x: torch.Tensor, layout: Int8 | Int4) -> str | None:
    """Why torch's int8 kernel cannot run these inputs, or None."""
    if x.device.type != "cpu":
        return f"torch's weight-only CPU kernels take CPU tensors, the input is on {x.device.type}"
    if x.dtype not in DTYPES:
        return f"the torch_cpu backend takes float32/bfloat16 activations, got {x.dtype}"
    return None


def int4_unusable(x: torch.Tensor, layout: Int4) -> str | None:
    """Why torch's int4 kernel cannot run these inputs, or None."""
    (n, k), group = layout.shape, layout.group_size
    if n % 16:
        return f"torch's int4 CPU kernel packs rows in blocks of 16: out_features % 16 == 0 is needed, got {n}"
    if group not in INT4_GROUPS or k % group:
        return (f"torch's int4 CPU kernel takes group_size in {INT4_GROUPS} dividing in_features, got "
                f"group_size {group} for in_features {k}")
    return unusable(x, layout)


def _int4_operands(layout: Int4, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's packed weight and `[K / group, N, 2]` scales-and-zeros for `layout`, made once per codes tensor."""
    entry = _INT4_PACKS.get(layout.codes)
    if entry is None or entry[0] != layout.codes._version:
        nibbles = unpack_nibbles(layout.codes).to(torch.int32)
        entry = (layout.codes._version, torch.ops.aten._convert_weight_to_int4pack_for_cpu(nibbles, 1), {})
        _INT4_PACKS[layout.codes] = entry
    per_dtype = entry[2]
    if dtype not in per_dtype:
        scales = layout.scales.float()
        zeros = torch.zeros_like(scales) if layout.zeros is None else (8.0 - layout.zeros.float()) * scales
        per_dtype[dtype] = torch.stack([scales.t(), zeros.t()], dim=-1).to(dtype).contiguous()
    return entry[1], per_dtype[dtype]


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).contiguous()


def _finish(y: torch.Tensor, x: torch.Tensor, n: int, bias: torch.Tensor | None) -> torch.Tensor:
    y = y.reshape(*x.shape[:-1], n)
    return y if bias is None else y + bias.to(y.dtype)


def torch_int8_linear(x: torch.Tensor, layout: Int8, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`x @ W^T (+ bias)` by `aten._weight_int8pack_mm` (which wants the row scales in x's dtype)."""
    y = torch.ops.aten._weight_int8pack_mm(_flat(x), layout.codes, layout.scales.to(x.dtype))
    return _finish(y, x, layout.shape[0], bias)


def torch_int4_linear(x: torch.Tensor, layout: Int4, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`x @ W^T (+ bias)` by `aten._weight_int4pack_mm_for_cpu` on the weight repacked in torch's order."""
    packed, scales_zeros = _int4_operands(layout, x.dtype)
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(_flat(x), packed, layout.group_size, scales_zeros)
    return _finish(y, x, layout.shape[0], bias)


Int8.register_kernel("torch_cpu", unusable)(torch_int8_linear)
Int4.register_kernel("torch_cpu", int4_unusable)(torch_int4_linear)
