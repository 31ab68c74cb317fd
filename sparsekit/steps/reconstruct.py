"""The `reconstruct` recipe step: block-wise reconstruction of a model that earlier steps changed, against
the model as it entered the recipe.

Two calibration streams run block by block in lockstep over the same windows: the entry model's (its
hidden states after block i are the targets) and the changed model's (its own inputs to block i, each
block fitted before it feeds the next). Block i's projections are fitted by
`sparsekit.prune.reconstruct.reconstruct_block` on

    L_i = sum_b ||block_i(x_b) - h_b^(i)||^2 / sum_b ||h_b^(i)||^2

with x_b the changed model's input to block i and h^(i) the entry model's output of block i, so each
block also absorbs the error of everything before it. Why a step of its own: the prune step's
`reconstruct` option runs inside the pruning sweep; removals made by structured steps (channels, heads,
sublayers chosen by `structured_search`) happen before any sweep, and their error is what a fit of the
weights that remain can win back (the 2:4 study saw the option take SparseGPT + permutation from 84.7
to 55.4).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from sparsekit.calib.engine import CalibSettings, LayerwiseCalibrator
from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import Adapter, get_adapter
from sparsekit.prune.reconstruct import reconstruct_block
from sparsekit.recipe import Reconstruct
from sparsekit.utils.device import resolve_device


@dataclass
class ReconstructStepResult:
    seconds: float = 0.0
    #: block index -> [relative calibration error before, after]
    blocks: dict[str, list[float]] = field(default_factory=dict)


def run_reconstruct(model: nn.Module, teacher: nn.Module, adapter: Adapter, step: Reconstruct,
                    calib_ids: torch.Tensor, *, device: torch.device | str = "cpu", progress: bool = True,
                    settings: CalibSettings | None = None) -> ReconstructStepResult:
    """Fit `model`'s blocks (in place) to `teacher`'s hidden states on `calib_ids`, block by block."""
    start = time.perf_counter()
    reference = get_adapter(teacher)
    if reference.num_blocks != adapter.num_blocks:
        raise SparsekitError(f"reconstruct: the model has {adapter.num_blocks} blocks and the model as it entered the "
                             f"recipe {reference.num_blocks}; block i is fitted to the entry model's block i, so "
                             "reconstruct cannot follow drop_blocks")
    device = resolve_device(device)
    mine = LayerwiseCalibrator(model, adapter=adapter, device=device, stats=False, sequential=True,
                               settings=settings, progress=progress)
    theirs = LayerwiseCalibrator(teacher, adapter=reference, device=device, stats=False, sequential=False,
                                 settings=settings, progress=False)
    train_batches = math.ceil(step.nsamples / mine.batch_size)
    result = ReconstructStepResult()
    for ctx, ref in zip(mine.blocks(calib_ids), theirs.blocks(calib_ids)):
        linears = {rel: lin for rel, lin in ctx.linears().items() if lin.weight.numel() > 0}
        if not linears:  # both sublayers removed: nothing left to fit
            continue
        # a weight that is exactly zero was removed by a prune step (or an earlier run): it stays removed
        keep = {rel: lin.weight.detach() != 0 for rel, lin in linears.items()}
        fit = reconstruct_block(ctx.block, linears, keep, ctx.forward_batch, ref.outputs, epochs=step.epochs,
                                lr=step.lr, train_batches=train_batches, schedule=step.schedule)
        result.blocks[str(ctx.index)] = [fit.before, fit.after]
    result.seconds = time.perf_counter() - start
    return result
