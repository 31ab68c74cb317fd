"""Packed drop-in module: `PackedLinear` (any layout; forward -> the `sparsekit::packed_linear` op).

`SparseLinear`, `QuantLinear` and `SparseQuantLinear` are aliases kept from earlier releases.
"""

from sparsekit.nn.packed import PackedLinear, QuantLinear, SparseLinear, SparseQuantLinear, set_backend

__all__ = ["PackedLinear", "QuantLinear", "SparseLinear", "SparseQuantLinear", "set_backend"]
