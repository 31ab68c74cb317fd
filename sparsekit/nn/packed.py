"""Drop-in replacements for `nn.Linear` whose weight lives in a packed layout and runs on `ops`.

| module              | layout (sparsekit.pack)                        | bits / weight (fp16 activations) |
|---------------------|------------------------------------------------|----------------------------------|
| `SparseLinear`      | Semi24 / Semi24MMA: 2:4 values + positions     | 9                                |
| `QuantLinear`       | Int4 (group-wise) or MXFP4                     | 4 + 16/g  or  4.25               |
| `SparseQuantLinear` | Int4Semi24 / Int4Semi24MMA: int4 2:4 + scales  | 3 + 16/g (3.125 at g128)         |

The *MMA layouts hold the same bytes in the register order of the sparse tensor cores (CUDA kernels).

The packed tensors are buffers, so `state_dict()` holds exactly what a checkpoint stores, and
`.to(device)` moves them. `backend` ('auto' | 'triton' | 'reference' | 'cuda') is passed to the op on
every call and can be changed at any time.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn

from sparsekit.errors import SparsekitError
from sparsekit.ops._dispatch import BACKENDS
from sparsekit.ops.packed_linear import packed_linear
from sparsekit.pack import LAYOUTS, MXFP4, Int4, Int4Semi24, Int4Semi24MMA, Layout, Semi24, Semi24MMA
from sparsekit.quant.base import QTensor


class PackedLinear(nn.Module):
    """Shared behaviour of the packed modules: buffers from a layout, forward through `ops`."""

    KINDS: ClassVar[tuple[str, ...]] = ()
    packed: ClassVar[bool] = True  # adapters accept it where an nn.Linear projection is expected

    def __init__(self, layout: Layout, bias: torch.Tensor | None = None, backend: str = "auto") -> None:
        super().__init__()
        if layout.KIND not in self.KINDS:
            raise SparsekitError(f"{type(self).__name__} holds {', '.join(self.KINDS)} layouts, got {layout.KIND}")
        self.kind = layout.KIND
        self.out_features, self.in_features = layout.shape
        self.group_size = getattr(layout, "group_size", None)
        self._fields = []
        for name, tensor in layout.tensors().items():
            self.register_buffer(name, tensor)
            self._fields.append(name)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.backend = backend

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise SparsekitError(f"backend must be one of {', '.join(BACKENDS)}, got {value!r}")
        self._backend = value

    def layout(self) -> Layout:
        """The packed weight as a layout object (views of this module's buffers)."""
        cls = LAYOUTS[self.kind]
        extra = {"group_size": self.group_size} if self.group_size is not None else {}
        if "zeros" in cls.__dataclass_fields__ and "zeros" not in self._fields:
            extra["zeros"] = None  # symmetric: no zero points stored
        tensors = {name: getattr(self, name) for name in self._fields}
        return cls(shape=(self.out_features, self.in_features), **tensors, **extra)

    def dequantized_weight(self) -> torch.Tensor:
        """The dense weight this module computes with (fp32), e.g. to compare with a simulation."""
        return self.layout().unpack()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_linear(x, self.layout(), self.bias, backend=self.backend)

    def extra_repr(self) -> str:
        layout = self.layout()
        group = f", group_size={self.group_size}" if self.group_size is not None else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, layout={self.kind}{group}, "
                f"bits_per_weight={layout.bits_per_weight:.3f}, bias={self.bias is not None}, backend={self.backend}")


def _bias(linear: nn.Linear) -> torch.Tensor | None:
    return None if linear.bias is None else linear.bias.detach()


class SparseLinear(PackedLinear):
    """A 2:4-sparse Linear: kept values + 2-bit positions."""

    KINDS = (Semi24.KIND, Semi24MMA.KIND)

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: torch.Tensor | None = None, *, dtype: torch.dtype | None = None,
                    backend: str = "auto", name: str = "weight") -> "SparseLinear":
        """Pack `linear.weight` under its 2:4 keep-`mask` (default: its non-zeros), optionally cast to `dtype`."""
        w = linear.weight.detach()
        mask = (w != 0) if mask is None else mask.to(w.device)
        layout = Semi24.pack(w.to(dtype or w.dtype).masked_fill(~mask, 0), mask, name=name)
        return cls(layout, _bias(linear), backend)


class QuantLinear(PackedLinear):
    """A weight-quantized Linear: int4 group-wise (W4A16) or MXFP4."""

    KINDS = (Int4.KIND, MXFP4.KIND)

    @classmethod
    def from_linear(cls, linear: nn.Linear, qtensor: QTensor, *, backend: str = "auto",
                    name: str = "weight") -> "QuantLinear":
        """Pack the codes + scales `qtensor` of `linear.weight` (from RTN or GPTQ)."""
        _check_shape(linear, qtensor, name)
        layout = MXFP4.pack(qtensor, name) if qtensor.format == "mxfp4" else Int4.pack(qtensor, name)
        return cls(layout, _bias(linear), backend)


class SparseQuantLinear(PackedLinear):
    """A 2:4-sparse int4 Linear: int4 codes of the kept values, positions and group scales."""

    KINDS = (Int4Semi24.KIND, Int4Semi24MMA.KIND)

    @classmethod
    def from_linear(cls, linear: nn.Linear, qtensor: QTensor, mask: torch.Tensor, *, backend: str = "auto",
                    name: str = "weight") -> "SparseQuantLinear":
        _check_shape(linear, qtensor, name)
        return cls(Int4Semi24.pack(qtensor, mask.to(qtensor.codes.device), name), _bias(linear), backend)


def _check_shape(linear: nn.Linear, q: QTensor, name: str) -> None:
    if tuple(q.shape) != tuple(linear.weight.shape):
        raise SparsekitError(f"{name}: codes of shape {tuple(q.shape)} do not belong to a weight of shape "
                             f"{tuple(linear.weight.shape)}")


MODULES: dict[str, type[PackedLinear]] = {kind: cls for cls in (SparseLinear, QuantLinear, SparseQuantLinear)
                                          for kind in cls.KINDS}
