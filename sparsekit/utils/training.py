"""What every step that trains some weights of a model in place shares (heal, block reconstruction, the fisher
score's backward): only the chosen parameters take gradients, the model's own flags come back afterwards, and
a keep-mask survives the optimizer step exactly."""

from __future__ import annotations

import contextlib
import math
from typing import Iterable, Iterator, Mapping

import torch
import torch.nn as nn


@contextlib.contextmanager
def only_trainable(module: nn.Module, params: Iterable[nn.Parameter] = ()) -> Iterator[None]:
    """Freeze every parameter of `module` except `params` (which take gradients) for the duration; on exit
    (an error included) every parameter gets its `requires_grad` flag back and its `.grad` dropped, so a
    step that trains leaves no gradient memory and no changed flag behind."""
    params = list(params)
    seen = {id(p) for p in module.parameters()}
    flags = [(p, p.requires_grad) for p in (*module.parameters(), *(q for q in params if id(q) not in seen))]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
            p.grad = None


def masked_step(opt: torch.optim.Optimizer, params: Mapping[str, torch.Tensor],
                keep: Mapping[str, torch.Tensor]) -> None:
    """One optimizer step that keeps pruned weights exactly zero: their gradients are zeroed before it (so
    Adam's moments never see them) and the keep-masks re-applied after it (Adam's update of a zero-gradient
    weight with a non-zero moment is not zero, and weight decay would move it too). `keep[name]` masks
    `params[name]`; parameters without a mask train freely."""
    for name, m in keep.items():
        params[name].grad.mul_(m)
    opt.step()
    with torch.no_grad():
        for name, m in keep.items():
            params[name].mul_(m)


def lr_factor(step: int, total: int, warmup: float = 0.0) -> float:
    """The learning-rate multiplier of optimizer step `step` (0-based) of `total`: a linear warm-up over the
    first `warmup` fraction of the steps, then a linear decay that reaches 0 after the last step."""
    w = max(1, math.ceil(warmup * total)) if warmup > 0 else 0
    if step < w:
        return (step + 1) / w
    return max(0.0, (total - step) / max(1, total - w))
