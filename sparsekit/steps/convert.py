"""Swap compressed projections for packed modules (`sparsekit.nn.PackedLinear`): the step after prune / quantize.

Which layout a projection gets follows from what the recipe left on it (keep-mask, codes + scales):
every registered layout says whether it is meant for that (`Layout.handles`) and whether it can hold
this projection (`Layout.unfit`), and the highest-`PRIORITY` layout that can wins
(`sparsekit.pack.choose_layout`). With the built-in layouts:

| keep-mask | codes (QTensor)          | layout                                              |
|-----------|--------------------------|-----------------------------------------------------|
| 2:4       | int4 (per channel/group) | Int4Semi24                                          |
| any/none  | int4 or mxfp4            | Int4 / MXFP4; pruned = code of 0                    |
| any/none  | int8 (per channel)       | Int8; pruned = code of 0                            |
| 2:4       | none                     | Semi24                                              |
| otherwise | -                        | stays `nn.Linear` (values already masked / on the grid) |

A layout with a twin in a device's register order (`Layout.REORDERS`: the mma.sp order of the
sparse tensor cores) is stored in that order when `order` asks for it ('auto': when the CUDA kernels
can run here). Anything that stays dense is reported with the reason (e.g. 'unstructured mask: no
packed kernel', 'format int3: no packed kernel yet'), so a user sees what runs simulated and what
runs packed.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from sparsekit import _ext
from sparsekit.errors import SparsekitError
from sparsekit.nn.packed import PackedLinear
from sparsekit.pack.layouts import CompressedWeight, choose_layout, twin_of
from sparsekit.quant.base import QTensor
from sparsekit.utils.pages import place_if_asked


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def device_order_wanted(order: str, backend: str, device: torch.device) -> bool:
    """Whether layouts go into a device's register order: 'auto' when the CUDA kernels can run them here."""
    if order not in ("auto", "mma", "plain"):
        raise SparsekitError(f"layout order must be 'auto', 'mma' or 'plain', got {order!r}")
    if order == "auto":
        return backend in ("auto", "cuda") and device.type == "cuda" and _ext.available()
    return order == "mma"


mma_order_wanted = device_order_wanted  # the name of earlier releases


@torch.no_grad()
def pack_modules(model: nn.Module, masks: dict[str, torch.Tensor], qtensors: dict[str, QTensor], *,
                 backend: str = "auto", dtype: torch.dtype | None = None, order: str = "auto") -> dict[str, str]:
    """Replace every projection of `masks` / `qtensors` that a layout fits; return name -> what it became.

    `dtype`: value dtype of layouts that store plain values (2:4; default: the weight's); int4 / MXFP4
    scales are always fp16 / E8M0. `order`: 'auto' | 'mma' | 'plain' (module docstring); a layout
    the device order cannot take stays plain and the report says why.
    """
    device_order_wanted(order, backend, torch.device("cpu"))  # a bad `order` fails before any module changes
    report = {}
    for name in sorted(set(masks) | set(qtensors)):
        try:
            linear = model.get_submodule(name)
        except AttributeError:  # a fused MoE expert parameter, not a module
            report[name] = "dense: fused expert parameters have no packed layout yet"
            continue
        mask, q = masks.get(name), qtensors.get(name)
        device = linear.weight.device
        c = CompressedWeight(linear.weight.detach(), None if mask is None else mask.to(device), q, name)
        cls = choose_layout(c)
        if isinstance(cls, str):
            report[name] = f"dense: {cls}"
            continue
        layout = cls.from_compressed(c, dtype)
        note = ""
        twin = twin_of(cls)
        if twin is not None and device_order_wanted(order, backend, device):
            why_not = twin.reorder_unfit(layout)
            if why_not is None:
                layout = twin.from_base(layout, name)
            else:
                note = f" (plain order: {why_not})"
        bias = None if linear.bias is None else linear.bias.detach()
        packed = PackedLinear(layout, bias, backend).to(device)
        place_if_asked(packed)  # SPARSEKIT_HUGE_PAGES=1: on 2 MiB pages (sparsekit.utils.pages)
        _replace(model, name, packed)
        report[name] = layout.KIND + note
    return report
