"""Ops with backend dispatch (cuda | triton | reference). Each op's reference is its specification.

`sparsekit.ops.packed_linear.packed_linear` dispatches through the layout's kernel registry and is the
torch custom op `sparsekit::packed_linear`; importing that module registers the built-in backends'
kernels. Its helpers are resolved lazily here: `sparsekit.pack` imports `sparsekit.quant`, whose calibration
statistics use `sum_squares` from this package.
"""

from __future__ import annotations

import importlib
from typing import Any

from sparsekit.ops._dispatch import BACKENDS, pick_backend
from sparsekit.ops.sum_squares import sum_squares, sum_squares_reference

_PACKED = ("explain", "packed_linear_reference", "select_kernel")

__all__ = ["BACKENDS", *_PACKED, "pick_backend", "sum_squares", "sum_squares_reference"]


def __getattr__(name: str) -> Any:
    if name in _PACKED:
        return getattr(importlib.import_module("sparsekit.ops.packed_linear"), name)
    raise AttributeError(f"module 'sparsekit.ops' has no attribute {name!r}")
