"""Ops with backend dispatch (cuda | triton | reference). Each op's reference is its specification."""

from sparsekit.ops._dispatch import BACKENDS, pick_backend
from sparsekit.ops.sum_squares import sum_squares, sum_squares_reference

__all__ = ["BACKENDS", "pick_backend", "sum_squares", "sum_squares_reference"]
