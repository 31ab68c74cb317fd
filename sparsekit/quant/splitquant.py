"""SplitQuant (Song & Lin 2025, seed 002 note 6): split a layer by k-means so that each part has a
narrow range, then quantize each part with its own scales.

The weights of a layer are clustered into k = 3 groups by 1-D k-means (lower tail, bulk, upper
tail). The layer becomes the sum of three layers of the same shape, W = W_low + W_mid + W_high,
each holding one cluster's weights and exact zeros elsewhere; each is quantized with the base
format, its scales taken from its own cluster only. The outliers of the tails then no longer
stretch the grid of the bulk, at the price of three codes per weight: storage is 3x the base
format (the paper trades memory for accuracy; a sparse storage of the parts is future work), which
`bits_per_weight` reports honestly. The three outputs are added, so y = x W_low^T + x W_mid^T +
x W_high^T = x (sum of the dequantized parts)^T: the accuracy study uses the summed weight.
"""

from __future__ import annotations

import torch

from sparsekit.errors import SparsekitError
from sparsekit.quant.base import QTensor, QuantFormat, remask


@torch.no_grad()
def kmeans_1d(values: torch.Tensor, k: int = 3, iters: int = 50) -> torch.Tensor:
    """Sorted cluster centres of 1-D `values` by Lloyd's algorithm, started at evenly spaced quantiles.

    In 1-D the assignment is by the midpoints between sorted centres, so each iteration is one
    `bucketize` and a scatter-mean: vectorised, no loop over values.
    """
    v = values.detach().float().flatten()
    if v.numel() < k:
        raise SparsekitError(f"k-means with k={k} needs at least {k} values, got {v.numel()}")
    qs = torch.linspace(0.5 / k, 1 - 0.5 / k, k, device=v.device)
    sample = v if v.numel() <= 1 << 24 else v[torch.randperm(v.numel(), device=v.device)[: 1 << 24]]
    centres = torch.quantile(sample, qs)
    for _ in range(iters):
        labels = assign(v, centres)
        sums = torch.zeros(k, device=v.device).scatter_add_(0, labels, v)
        counts = torch.zeros(k, device=v.device).scatter_add_(0, labels, torch.ones_like(v))
        new = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        new, _ = torch.sort(new)
        if torch.equal(new, centres):
            break
        centres = new
    return centres


def assign(values: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the sorted `centres` for every value."""
    mids = (centres[1:] + centres[:-1]) / 2
    return torch.bucketize(values, mids)


class SplitQuant:
    """A base format applied to the k-means split of each layer (see module docstring)."""

    def __init__(self, base: QuantFormat, k: int = 3) -> None:
        self.base = base
        self.k = k
        self.name = f"splitquant-{base.name}"
        self.group_size = base.group_size

    def describe(self) -> str:
        return f"splitquant(k={self.k}) {self.base.describe()}"

    @property
    def element_bits(self) -> float:
        return self.k * self.base.element_bits

    def group_width(self, in_features: int, out_features: int = 1) -> int:
        return self.base.group_width(in_features, out_features)

    def check_finite(self, w: torch.Tensor, name: str = "weight") -> None:
        self.base.check_finite(w, name)

    def bits_per_weight(self, shape: tuple[int, int]) -> float:
        return self.k * self.base.bits_per_weight(shape)

    @torch.no_grad()
    def quantize(self, w: torch.Tensor, keep: torch.Tensor | None = None, *, name: str = "weight"
                 ) -> list[QTensor]:
        """One QTensor per part; part i holds the weights of cluster i (others are its zeros)."""
        self.check_finite(w, name)
        flat = w.detach().float()
        members = flat if keep is None else flat[keep]
        labels = assign(flat, kmeans_1d(members, self.k))
        parts = []
        for i in range(self.k):
            part_keep = labels == i if keep is None else (labels == i) & keep
            parts.append(self.base.quantize(flat.masked_fill(~part_keep, 0.0), part_keep, name=name))
        return parts

    def dequantize(self, parts: list[QTensor]) -> torch.Tensor:
        return sum(self.base.dequantize(p) for p in parts)

    @torch.no_grad()
    def fake_quantize(self, w: torch.Tensor, keep: torch.Tensor | None = None, *, name: str = "weight"
                      ) -> torch.Tensor:
        return remask(self.dequantize(self.quantize(w, keep, name=name)), keep, w.dtype)
