"""`PackedLinear`: the drop-in replacement for `nn.Linear` whose weight lives in any packed layout.

| layout (sparsekit.pack)          | what it holds                              | bits / weight (fp16) |
|----------------------------------|--------------------------------------------|----------------------|
| Semi24 / Semi24MMA               | 2:4 values + 2-bit positions               | 9                    |
| Int4 / MXFP4                     | group-wise int4 (W4A16) / OCP MXFP4        | 4 + 16/g  /  4.25    |
| Int4Semi24 / Int4Semi24MMA       | int4 codes of the kept 2:4 values + scales | 3 + 16/g             |
| any registered `Layout` subclass | see its class                              |                      |

One module class serves every layout: the layout's tensors are buffers (so `state_dict()` holds
exactly what a checkpoint stores and `.to(device)` moves them), its kind, shape and attributes are
plain attributes, and `forward` runs `sparsekit.ops.packed_linear.packed_linear_op` (traced: the custom
op `sparsekit::packed_linear`; eager: the same code without the dispatcher hop), which rebuilds the
layout and runs the kernel the layout registered for `backend` ('auto' | 'cuda' | 'triton' |
'reference'; changeable at any time). `SparseLinear`, `QuantLinear` and `SparseQuantLinear` are the
names of earlier releases, kept as aliases of `PackedLinear`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn

from sparsekit.errors import SparsekitError
from sparsekit.ops._dispatch import BACKENDS, OPT_IN
from sparsekit.ops.packed_linear import explain, layout_spec, packed_linear_op
from sparsekit.pack.layouts import LAYOUTS, CompressedWeight, Layout, choose_layout, semi24_default_mask
from sparsekit.quant.base import QTensor


class PackedLinear(nn.Module):
    """`y = x W^T + b` with W in a packed layout (module docstring)."""

    packed: ClassVar[bool] = True  # adapters accept it where an nn.Linear projection is expected

    def __init__(self, layout: Layout, bias: torch.Tensor | None = None, backend: str = "auto") -> None:
        super().__init__()
        self.kind = layout.KIND
        self.out_features, self.in_features = layout.shape
        self.layout_attrs = dict(layout.attrs())
        self._fields = list(layout.tensors())
        for name, tensor in layout.tensors().items():
            self.register_buffer(name, tensor)
        self._spec = layout_spec(layout)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.backend = backend

    @classmethod
    def from_linear(cls, linear: nn.Linear, *parts: torch.Tensor | QTensor, mask: torch.Tensor | None = None,
                    qtensor: QTensor | None = None, layout: type[Layout] | None = None,
                    dtype: torch.dtype | None = None, backend: str = "auto", name: str = "weight") -> "PackedLinear":
        """Pack `linear` with what compression left on it: a bool keep-mask and/or codes + scales (`QTensor`),
        positionally in any order or as `mask=` / `qtensor=` (the keywords of earlier releases). With
        neither, the weight must already be 2:4 (`semi24_default_mask`). `layout`: the layout class
        (default: the highest-priority layout that fits, as `sparsekit.convert` chooses: `choose_layout`);
        `dtype`: value dtype of layouts that store plain values."""
        mask = next((p for p in parts if isinstance(p, torch.Tensor)), mask)
        qtensor = next((p for p in parts if isinstance(p, QTensor)), qtensor)
        weight = linear.weight.detach()
        if mask is None and qtensor is None:
            mask = semi24_default_mask(weight, name)
        c = CompressedWeight(weight, None if mask is None else mask.to(weight.device), qtensor, name)
        chosen = choose_layout(c) if layout is None else layout
        if isinstance(chosen, str):
            raise SparsekitError(f"{name}: no packed layout fits: {chosen}")
        why = chosen.unfit(c) if chosen.handles(c) else f"the {chosen.KIND} layout does not hold {c.describe()}"
        if why:
            raise SparsekitError(f"{name}: {why}")
        return cls(chosen.from_compressed(c, dtype), None if linear.bias is None else linear.bias.detach(), backend)

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise SparsekitError(f"backend must be one of {', '.join(BACKENDS)}, got {value!r}")
        self._backend = value

    @property
    def group_size(self) -> int | None:
        return self.layout_attrs.get("group_size")

    def layout(self) -> Layout:
        """The packed weight as a layout object (views of this module's buffers)."""
        return LAYOUTS[self.kind].from_tensors((self.out_features, self.in_features),
                                               {name: getattr(self, name) for name in self._fields}, self.layout_attrs)

    def dequantized_weight(self) -> torch.Tensor:
        """The dense weight this module computes with (fp32), e.g. to compare with a simulation."""
        return self.layout().unpack()

    def explain(self, x: torch.Tensor) -> dict[str, str]:
        """Which backends could run `x` here, and why the others cannot (`auto` takes the first 'ok')."""
        return explain(x, self.layout())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_linear_op(x, [getattr(self, name) for name in self._fields], self.bias, self._spec,
                                self._backend)

    def extra_repr(self) -> str:
        attrs = "".join(f", {k}={v}" for k, v in self.layout_attrs.items())
        return (f"in_features={self.in_features}, out_features={self.out_features}, layout={self.kind}{attrs}, "
                f"bits_per_weight={self.layout().bits_per_weight:.3f}, bias={self.bias is not None}, "
                f"backend={self.backend}")


# names of earlier releases (one class per layout family); every packed module is a PackedLinear now
SparseLinear = QuantLinear = SparseQuantLinear = PackedLinear


def set_backend(model: nn.Module, backend: str) -> int:
    """Run every packed module of `model` whose layout has a `backend` kernel on it (e.g. the opt-in
    'cpu_a8' for the int4 / int4 + 2:4 / MXFP4 modules; the others keep theirs); returns how many.
    'auto' and the `AUTO_ORDER` backends apply to every packed module. Raises SparsekitError for an
    unknown backend or one that no packed module of the model has."""
    if backend not in BACKENDS:
        raise SparsekitError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    packed = [m for m in model.modules() if isinstance(m, PackedLinear)]
    chosen = [m for m in packed if backend not in OPT_IN or backend in LAYOUTS[m.kind].kernels()]
    if backend != "auto" and not chosen:
        kinds = sorted({m.kind for m in packed}) or ["none: the model has no packed modules"]
        raise SparsekitError(f"backend {backend!r}: no packed module of this model has a kernel for it (layouts: "
                             f"{', '.join(kinds)})")
    for m in chosen:
        m.backend = backend
    return len(chosen)
