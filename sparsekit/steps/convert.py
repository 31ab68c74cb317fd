"""Swap compressed projections for packed modules (`sparsekit.nn`): the step after prune / quantize.

Which module a projection becomes follows from what the recipe left on it:

| keep-mask | codes (QTensor)          | module                                  |
|-----------|--------------------------|-----------------------------------------|
| 2:4       | int4 (per channel/group) | SparseQuantLinear (Int4Semi24)          |
| any/none  | int4 or mxfp4            | QuantLinear (Int4 / MXFP4); pruned = code of 0 |
| 2:4       | none                     | SparseLinear (Semi24)                   |
| otherwise | -                        | stays `nn.Linear` (values already masked / on the grid) |

With the compiled extension and a model on a GPU (or `order="mma"`), 2:4 layouts are stored in the
register order of the sparse tensor cores (`Semi24MMA`, `Int4Semi24MMA`), which the CUDA kernels read.

Anything that stays dense is reported with the reason (e.g. 'unstructured mask: no packed kernel',
'format int8: no packed kernel yet'), so a user sees what runs simulated and what runs packed.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from sparsekit import _ext
from sparsekit.errors import SparsekitError
from sparsekit.nn.packed import QuantLinear, SparseLinear, SparseQuantLinear
from sparsekit.pack.mma_sp import mma_unfit, to_mma
from sparsekit.prune.patterns import is_nm
from sparsekit.quant.base import QTensor

PACKED_FORMATS = ("int4", "mxfp4")


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def choose(linear: nn.Linear, mask: torch.Tensor | None, q: QTensor | None) -> tuple[str | None, str]:
    """(module kind or None, why) for one projection."""
    k = linear.in_features
    is24 = mask is not None and k % 8 == 0 and is_nm(mask, 2, 4)
    if q is not None:
        if q.format not in PACKED_FORMATS:
            return None, f"format {q.format}: no packed kernel yet (dequantized values run dense)"
        if q.group_size < 0:
            return None, "per-tensor scales: the packed int4 layouts need per-channel or group scales"
        if q.format == "mxfp4":
            return ("mxfp4", "MXFP4 codes") if k % 32 == 0 else (None, f"mxfp4 needs in_features % 32 == 0, got {k}")
        if is24 and (q.group_size or k) % 4 == 0:
            return "int4_semi24", "int4 codes of a 2:4 mask"
        return ("int4", "int4 codes") if k % 2 == 0 else (None, f"int4 nibbles need an even in_features, got {k}")
    if is24:
        return "semi24", "2:4 mask"
    if mask is not None:
        return None, "unstructured mask: no packed kernel (zeros stay in the dense weight)"
    return None, "not compressed"


def mma_order_wanted(order: str, backend: str, device: torch.device) -> bool:
    """Whether 2:4 layouts go into mma.sp order: 'auto' when the CUDA kernels can run them here."""
    if order not in ("auto", "mma", "plain"):
        raise SparsekitError(f"layout order must be 'auto', 'mma' or 'plain', got {order!r}")
    if order == "auto":
        return backend in ("auto", "cuda") and device.type == "cuda" and _ext.available()
    return order == "mma"


@torch.no_grad()
def pack_modules(model: nn.Module, masks: dict[str, torch.Tensor], qtensors: dict[str, QTensor], *,
                 backend: str = "auto", dtype: torch.dtype | None = None, order: str = "auto") -> dict[str, str]:
    """Replace every projection of `masks` / `qtensors` that has a packed layout; return name -> what it became.

    `dtype`: value dtype of 2:4 layouts (default: the weight's); int4 / MXFP4 scales are always fp16 / E8M0.
    `order`: 'auto' | 'mma' | 'plain' — whether 2:4 layouts are stored in mma.sp order (module docstring);
    a layout the kernels cannot take stays plain and the report says why.
    """
    mma_order_wanted(order, backend, torch.device("cpu"))  # a bad `order` fails before any module changes
    report = {}
    for name in sorted(set(masks) | set(qtensors)):
        try:
            linear = model.get_submodule(name)
        except AttributeError:  # a fused MoE expert parameter, not a module
            report[name] = "dense: fused expert parameters have no packed layout yet"
            continue
        mask, q = masks.get(name), qtensors.get(name)
        kind, why = choose(linear, mask, q)
        if kind is None:
            report[name] = f"dense: {why}"
            continue
        device = linear.weight.device
        if kind == "semi24":
            new = SparseLinear.from_linear(linear, mask, dtype=dtype, backend=backend, name=name)
        elif kind == "int4_semi24":
            new = SparseQuantLinear.from_linear(linear, q, mask, backend=backend, name=name)
        else:
            new = QuantLinear.from_linear(linear, q, backend=backend, name=name)
        note = ""
        if kind in ("semi24", "int4_semi24") and mma_order_wanted(order, backend, device):
            why_not = mma_unfit(new.layout())
            if why_not is None:
                new = type(new)(to_mma(new.layout(), name), new.bias, backend)
                kind = new.kind
            else:
                note = f" (plain order: {why_not})"
        _replace(model, name, new.to(device))
        report[name] = kind + note
    return report
