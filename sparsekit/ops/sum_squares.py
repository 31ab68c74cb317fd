"""sum_squares(x) -> fp32 [K]: per-column sum of squares of a [T, K] activation matrix."""

from __future__ import annotations

import torch

from sparsekit.ops._dispatch import pick_backend


def sum_squares_reference(x: torch.Tensor) -> torch.Tensor:
    """The specification: sum over tokens of x^2, in fp32."""
    x = x.float()
    return (x * x).sum(dim=0)


def sum_squares(x: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Column sum of squares of a 2-D tensor `[tokens, features]`, fp32 result `[features]`."""
    if x.dim() != 2:
        raise ValueError(f"sum_squares expects a 2-D [tokens, features] tensor, got shape {tuple(x.shape)}")
    chosen = pick_backend("sum_squares", backend, x)
    if chosen == "triton":
        from sparsekit.kernels.sum_squares import sum_squares as triton_sum_squares

        return triton_sum_squares(x)
    return sum_squares_reference(x)
