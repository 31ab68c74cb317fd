"""Block-wise reconstruction: with the keep-masks fixed, fit the kept weights of one decoder block so
that it reproduces what the dense block produced on the same calibration inputs.

Layer-wise pruning (Wanda, SparseGPT) minimises each projection's error alone; the errors of q/k/v,
o, gate/up and down then compound through attention and the MLP's nonlinearity. Minimising the
*block's* output error with the masks held fixed recovers much of that: a few epochs of Adam over
the calibration batches the layer-wise engine already holds (the first few batches: a block has millions of weights and a few epochs over 32 windows
already fit it; the others are held out), on the loss

    L = sum_b ||block(x_b) - y_b||^2 / sum_b ||y_b||^2

with y_b the dense block's outputs. Gradients of pruned weights are zeroed and the masks re-applied
after every step, so pruned weights stay exactly zero (an N:M mask stays N:M). The loss is measured
on every batch before training and after each epoch, and the block keeps the weights of the best
measurement: reconstruction never increases the calibration error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from sparsekit.utils.training import lr_factor, masked_step, only_trainable


#: learning-rate schedules of a fit: `lr` throughout, or decayed linearly to 0 over its steps
SCHEDULES = ("constant", "linear")


@dataclass
class ReconstructionResult:
    """Relative calibration error of the block before and after, and the epoch kept (0: none helped)."""

    before: float
    after: float
    epoch: int


def _relative_error(run: Callable[[int], torch.Tensor], targets: list[torch.Tensor], energy: list[float]) -> float:
    num = sum(float((run(b).float() - y.float()).pow(2).sum()) for b, y in enumerate(targets))
    return num / max(sum(energy), 1e-30)


def reconstruct_block(block: nn.Module, linears: dict[str, nn.Linear], masks: dict[str, torch.Tensor],
                      run: Callable[[int], torch.Tensor], targets: list[torch.Tensor], *, epochs: int = 4,
                      lr: float = 2e-3, train_batches: int | None = None,
                      schedule: str = "constant") -> ReconstructionResult:
    """Fit the kept weights of `linears` (name -> module inside `block`; `masks[name]`: keep-mask of its
    weight) so that `run(b)`, the block's output on calibration batch b, reproduces `targets[b]`.
    Adam steps over the first `train_batches` batches (None: all); the error that decides which epoch's
    weights are kept is measured on every batch, so the held-out ones guard against overfitting.
    `schedule` 'linear' decays the rate linearly to 0 over the epochs x batches steps ('constant': `lr`).
    Everything else in the block stays frozen."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    params = {name: lin.weight for name, lin in linears.items()}
    keep = {name: masks[name].to(device=p.device, dtype=p.dtype) for name, p in params.items()}
    energy = [float(y.float().pow(2).sum()) for y in targets]  # ||y_b||^2, once
    with only_trainable(block, params.values()):
        with torch.no_grad():
            best = before = _relative_error(run, targets, energy)
        best_state = {name: p.detach().clone() for name, p in params.items()}
        best_epoch = 0
        opt = torch.optim.Adam(list(params.values()), lr=lr)
        train = targets[:train_batches] if train_batches else targets
        den = sum(energy[:len(train)]) / len(train)
        total = epochs * len(train)
        for epoch in range(1, epochs + 1):
            for b, y in enumerate(train):
                if schedule == "linear":
                    for group in opt.param_groups:
                        group["lr"] = lr * lr_factor((epoch - 1) * len(train) + b, total)
                with torch.enable_grad():
                    loss = (run(b).float() - y.float()).pow(2).sum() / den
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                masked_step(opt, params, keep)
            with torch.no_grad():
                err = _relative_error(run, targets, energy)
            if err < best:
                best, best_epoch = err, epoch
                best_state = {name: p.detach().clone() for name, p in params.items()}
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(best_state[name])
    return ReconstructionResult(before, best, best_epoch)
