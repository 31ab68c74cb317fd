"""Streaming input statistics of a Linear layer, accumulated in fp32.

For a Linear y = x W^T with inputs x_t in R^K over calibration tokens t = 1..n:

    sum_sq[j] = sum_t x_tj^2        Wanda's ||X_j||_2^2 (the per-input-channel activation norm)
    sum_x[j]  = sum_t x_tj          the channel mean times n (DSnoT's expected contribution E[x_j])
    count     = n                   tokens seen
    xtx       = sum_t x_t x_t^T     the Gram matrix behind SparseGPT / GPTQ's Hessian H = 2 X X^T / n

These are pure accumulations: order of tokens does not matter, so statistics from several batches
(or devices) add up exactly (up to fp32 rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparsekit.ops.sum_squares import sum_squares


@dataclass
class LinearStats:
    sum_sq: torch.Tensor            # [K] fp32
    count: int = 0
    xtx: torch.Tensor | None = None  # [K, K] fp32, only when requested
    sum_x: torch.Tensor | None = None  # [K] fp32

    @classmethod
    def empty(cls, in_features: int, device: torch.device | str = "cpu", *, hessian: bool = False) -> "LinearStats":
        xtx = torch.zeros(in_features, in_features, dtype=torch.float32, device=device) if hessian else None
        zeros = torch.zeros(in_features, dtype=torch.float32, device=device)
        return cls(zeros, 0, xtx, zeros.clone())

    @property
    def in_features(self) -> int:
        return self.sum_sq.numel()

    def mean_sq(self) -> torch.Tensor:
        """Per-channel mean of x^2 (sum_sq / count)."""
        return self.sum_sq / max(self.count, 1)

    def mean(self) -> torch.Tensor:
        """Per-channel mean of x (sum_x / count)."""
        if self.sum_x is None:
            raise ValueError("this LinearStats was built without channel sums")
        return self.sum_x / max(self.count, 1)

    def var(self) -> torch.Tensor:
        """Per-channel (population) variance of x, E[x^2] - E[x]^2, clamped at 0 against rounding."""
        return (self.mean_sq() - self.mean() ** 2).clamp_min(0)

    def hessian(self) -> torch.Tensor:
        """SparseGPT/GPTQ's layer Hessian 2 X X^T / n (fp32)."""
        if self.xtx is None:
            raise ValueError("this LinearStats was collected without the Hessian: calibrate with hessian=True")
        return self.xtx * (2.0 / max(self.count, 1))


def accumulate(stats: LinearStats, x: torch.Tensor) -> LinearStats:
    """Add the tokens of `x` (`[..., K]`, any float dtype) to `stats` in place and return it."""
    if x.shape[-1] != stats.in_features:
        raise ValueError(f"input has {x.shape[-1]} features but the statistics track {stats.in_features}")
    x2 = x.reshape(-1, x.shape[-1])
    stats.sum_sq += sum_squares(x2).to(stats.sum_sq.device)
    if stats.sum_x is not None:
        stats.sum_x += torch.sum(x2, 0, dtype=torch.float32).to(stats.sum_x.device)
    stats.count += x2.shape[0]
    if stats.xtx is not None:
        xf = x2.to(device=stats.xtx.device, dtype=torch.float32)
        stats.xtx.addmm_(xf.T, xf)
    return stats
