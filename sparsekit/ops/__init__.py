"""Ops with backend dispatch (cuda | triton | reference). Each op's reference is its specification.

`packed_linear` dispatches through the layout's kernel registry and is the torch custom op
`sparsekit::packed_linear`; importing this package registers the built-in backends' kernels.
"""

from sparsekit.ops._dispatch import BACKENDS, pick_backend
from sparsekit.ops.packed_linear import explain, packed_linear, packed_linear_reference, select_kernel
from sparsekit.ops.sum_squares import sum_squares, sum_squares_reference

__all__ = ["BACKENDS", "explain", "packed_linear", "packed_linear_reference", "pick_backend", "select_kernel",
           "sum_squares", "sum_squares_reference"]
