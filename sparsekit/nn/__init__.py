"""Packed drop-in module: `PackedLinear` (any layout; forward -> the `sparsekit::packed_linear` op); `DenseLinear`
(an `nn.Linear` on sparsekit's CPU GEMV, `use_dense_kernels`: what a converted model's fp32 or bf16 LM head runs).

`SparseLinear`, `QuantLinear` and `SparseQuantLinear` are aliases kept from earlier releases.
"""

from sparsekit.nn.dense import DenseLinear, use_dense_kernels
from sparsekit.nn.packed import PackedLinear, QuantLinear, SparseLinear, SparseQuantLinear, set_backend

__all__ = ["DenseLinear", "PackedLinear", "QuantLinear", "SparseLinear", "SparseQuantLinear", "set_backend",
           "use_dense_kernels"]
