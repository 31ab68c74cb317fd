"""Packed drop-in modules: `SparseLinear`, `QuantLinear`, `SparseQuantLinear` (forward -> `sparsekit.ops`)."""

from sparsekit.nn.packed import MODULES, PackedLinear, QuantLinear, SparseLinear, SparseQuantLinear

__all__ = ["MODULES", "PackedLinear", "QuantLinear", "SparseLinear", "SparseQuantLinear"]
