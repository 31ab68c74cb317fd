"""One handler per recipe step type: `run_steps` applies a recipe's steps to a model in order.

A handler takes the step and the shared `StepState` (model, adapter, calibration ids, what earlier
steps left: keep-masks, codes + scales, the per-step records a checkpoint stores) and updates it. A new
step type is one dataclass in `sparsekit.recipe` and one `@handles(...)` function here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import Adapter
from sparsekit.recipe import DropBlocks, DropSublayers, Prune, PruneChannels, PruneExperts, PruneHeads, Quantize
from sparsekit.steps.prune import run_prune
from sparsekit.steps.quantize import module_record, run_quantize
from sparsekit.steps.structured import run_drop_blocks, run_drop_sublayers, run_prune_experts, run_prune_width


@dataclass
class StepState:
    """What the steps of one recipe share and leave behind."""

    model: nn.Module
    adapter: Adapter
    ids: torch.Tensor | None
    device: torch.device
    progress: bool = True
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    qtensors: dict[str, Any] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    upcoming: list[Any] = field(default_factory=list)  # the steps after the current one


HANDLERS: dict[type, Callable[[Any, StepState], None]] = {}


def handles(*types: type) -> Callable:
    def register(fn: Callable[[Any, StepState], None]) -> Callable[[Any, StepState], None]:
        for t in types:
            HANDLERS[t] = fn
        return fn
    return register


@handles(Prune)
def _prune(step: Prune, st: StepState) -> None:
    nxt = st.upcoming[0] if st.upcoming else None
    joint = nxt if isinstance(nxt, Quantize) and nxt.joint else None
    out = run_prune(st.model, st.adapter, step, st.ids, device=st.device, progress=st.progress, joint=joint)
    for key in set(out.masks) & set(st.masks):  # a later prune step keeps what earlier ones removed
        out.masks[key] = out.masks[key] & st.masks[key]
    st.masks.update(out.masks)
    st.qtensors.update(out.qtensors)
    for t in out.targets:
        out.modules[t.name]["pattern"] = step.pattern
    st.records.append({"step": "prune", "seconds": out.seconds, "sparsity": out.sparsity, "modules": out.modules,
                       "allocation": out.allocation_info})
    if joint is not None:
        st.records.append({"step": "quantize", "seconds": 0.0, "joint_with_previous": True,
                           "modules": {t.name: module_record(t, joint, tuple(out.masks[t.name].shape))
                                       for t in out.targets}})


@handles(Quantize)
def _quantize(step: Quantize, st: StepState) -> None:
    if step.joint:
        return  # ran inside the preceding sparsegpt step
    out = run_quantize(st.model, st.adapter, step, st.ids, masks=st.masks, device=st.device, progress=st.progress)
    st.qtensors.update(out.qtensors)
    st.records.append({"step": "quantize", "seconds": out.seconds, "modules": out.modules})


@handles(PruneHeads, PruneChannels, PruneExperts)
def _prune_width(step: PruneHeads | PruneChannels | PruneExperts, st: StepState) -> None:
    run = run_prune_experts if isinstance(step, PruneExperts) else run_prune_width
    out = run(st.model, st.adapter, step, st.ids, device=st.device, progress=st.progress)
    st.records.append({"step": step.NAME, "seconds": out.seconds, "params_removed": out.params_removed,
                       "kept": out.scores["kept"], "modules": {}})


@handles(DropSublayers)
def _drop_sublayers(step: DropSublayers, st: StepState) -> None:
    out = run_drop_sublayers(st.model, st.adapter, step, st.ids, progress=st.progress)
    st.records.append({"step": "drop_sublayers", "seconds": out.seconds, "removed": out.removed,
                       "params_removed": out.params_removed, "scores": out.scores, "modules": {}})


@handles(DropBlocks)
def _drop_blocks(step: DropBlocks, st: StepState) -> None:
    out = run_drop_blocks(st.model, st.adapter, step, st.ids, device=st.device, progress=st.progress)
    st.records.append({"step": "drop_blocks", "seconds": out.seconds, "method": step.method, "removed": out.removed,
                       "kept": out.kept, "params_removed": out.params_removed, "scores": out.scores,
                       "modules": {}})


def run_steps(steps: list[Any], state: StepState) -> StepState:
    """Apply `steps` in order through their handlers."""
    for i, step in enumerate(steps):
        handler = HANDLERS.get(type(step))
        if handler is None:
            raise SparsekitError(f"recipe step {type(step).__name__} has no handler in sparsekit.steps.run")
        state.upcoming = steps[i + 1:]
        handler(step, state)
    return state
