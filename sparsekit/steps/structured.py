"""Run structured recipe steps over a model: measure, choose, then physically remove.

`drop_blocks`: block scores come from one pass of the layer-wise calibrator over the first
`nsamples` calibration windows of the *unmodified* model (no statistics, no sequential update):
ShortGPT's Block Influence per block, or the angular distance between the hidden states entering
block l and block l + n for every start l (`sparsekit.prune.structured`). The chosen blocks are cut
out by `sparsekit.models.surgery.drop_blocks`, which keeps config, layer types and KV-cache slots
consistent, so the model saves with `save_pretrained` and generates as before.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from sparsekit.calib.engine import LayerwiseCalibrator
from sparsekit.models.adapters import Adapter
from sparsekit.models.surgery import drop_blocks
from sparsekit.prune.structured import angular_span_distances, block_influence, lowest
from sparsekit.recipe import DropBlocks
from sparsekit.utils.device import resolve_device


@dataclass
class StructuredResult:
    removed: list[int]
    kept: list[int]
    params_removed: int
    scores: dict = field(default_factory=dict)
    seconds: float = 0.0


def _rows(hidden: list[torch.Tensor], tokens: str) -> torch.Tensor:
    """`[rows, hidden]` fp32 on the CPU: the last token of each window, or every token."""
    if tokens == "last":
        return torch.cat([h[:, -1, :] for h in hidden]).float().cpu()
    return torch.cat([h.reshape(-1, h.shape[-1]) for h in hidden]).float().cpu()


@torch.no_grad()
def block_scores(model: nn.Module, adapter: Adapter, step: DropBlocks, calib_ids: torch.Tensor,
                 device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """{'bi': [per block]} or {'angular': [d(l, n) per start l]} on the unmodified model."""
    calib = LayerwiseCalibrator(model, adapter=adapter, device=resolve_device(device), stats=False,
                                sequential=False, progress=progress)
    bi: list[float] = []
    hidden: list[torch.Tensor] = []
    for ctx in calib.blocks(calib_ids[: step.nsamples]):
        if step.method == "bi":
            bi.append(block_influence(ctx.inputs, ctx.outputs))
        else:
            hidden.append(_rows(ctx.inputs, step.tokens))
    if step.method == "bi":
        return {"bi": bi}
    hidden.append(_rows(calib.final_hidden, step.tokens))
    return {"angular": angular_span_distances(hidden, step.n)}


def choose_blocks(step: DropBlocks, num_blocks: int, scores: dict) -> list[int]:
    """The block indices a `DropBlocks` step removes, given its scores."""
    if step.method == "explicit":
        return list(step.blocks)
    if step.method == "last":
        return list(range(num_blocks - step.n, num_blocks))
    if step.method == "bi":
        return lowest(scores["bi"], step.n)
    d = scores["angular"]
    start = min(range(len(d)), key=lambda l: (d[l], -l))
    return list(range(start, start + step.n))


def run_drop_blocks(model: nn.Module, adapter: Adapter, step: DropBlocks, calib_ids: torch.Tensor | None = None, *,
                    device: torch.device | str = "cpu", progress: bool = True) -> StructuredResult:
    """Apply `step` in place; report what was removed and how many parameters went with it."""
    from sparsekit.errors import SparsekitError

    start = time.perf_counter()
    total = adapter.num_blocks
    if step.n >= total:
        raise SparsekitError(f"drop_blocks: n={step.n} would remove every one of the {total} blocks")
    if step.method == "explicit" and step.blocks and step.blocks[-1] >= total:
        raise SparsekitError(f"drop_blocks: block {step.blocks[-1]} does not exist (the model has {total} blocks)")
    scores: dict = {}
    if step.needs_data:
        if calib_ids is None:
            raise SparsekitError(f"drop_blocks: method {step.method!r} needs calibration data (calib_ids)")
        scores = block_scores(model, adapter, step, calib_ids, device, progress)
    removed = choose_blocks(step, total, scores) if step.n else []
    params = sum(p.numel() for i in removed for p in adapter.blocks[i].parameters())
    kept = drop_blocks(adapter, removed)
    return StructuredResult(removed, kept, params, scores, time.perf_counter() - start)
