"""One handler per recipe step type: `run_steps` applies a recipe's steps to a model in order.

A handler takes the step and the shared `StepState` (model, adapter, calibration ids, what earlier
steps left: keep-masks, codes + scales, the typed per-step records a checkpoint stores, see
`sparsekit.steps.records`) and updates it. A new step type is one dataclass in `sparsekit.recipe`, one
record class in `sparsekit.steps.records` and one `@handles(...)` function here.

Steps that run as one unit are paired up front by `plan_steps`: a SparseGPT prune step followed by a
`quantize: {joint: true}` step becomes one `PruneQuantizeJoint`, whose handler runs the single sweep and
records both steps. No handler looks at the steps around its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
import torch.nn as nn

from sparsekit.calib.engine import CalibSettings, module_device
from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import Adapter
from sparsekit.recipe import (STRUCTURED_STEPS, DropBlocks, DropSublayers, Heal, Prune, PruneChannels,
                              PruneExperts, PruneHeads, Quantize, Reconstruct, StructuredSearch)
from sparsekit.steps.prune import PruneResult, check_prune_shapes, run_prune, run_prune_quantize
from sparsekit.steps.quantize import check_quantize_shapes, run_quantize
from sparsekit.steps.heal import run_heal
from sparsekit.steps.reconstruct import run_reconstruct
from sparsekit.steps.records import (DropBlocksRecord, DropSublayersRecord, HealRecord, QuantizeRecord,
                                     ReconstructRecord, SearchRecord, StepRecord, WidthRecord)
from sparsekit.steps.structured_search import run_structured_search
from sparsekit.steps.structured import run_drop_blocks, run_drop_sublayers, run_prune_experts, run_prune_width
from sparsekit.steps.targets import step_targets


@dataclass
class StepState:
    """What the steps of one recipe share and leave behind."""

    model: nn.Module
    adapter: Adapter
    ids: torch.Tensor | None
    device: torch.device
    progress: bool = True
    calib: CalibSettings = field(default_factory=CalibSettings)  # the prune / quantize / heal steps' forwards
    teacher: nn.Module | None = None  # the model as it entered the recipe (heal distils it, reconstruct fits to it)
    # (n, seqlen, seed, packed) -> C4 token windows (packed: `packed_windows`, else `calibration_windows`)
    windows: Callable[..., torch.Tensor] | None = None
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    qtensors: dict[str, Any] = field(default_factory=dict)
    records: list[StepRecord] = field(default_factory=list)


@dataclass(frozen=True)
class PruneQuantizeJoint:
    """A prune step and the `quantize: {joint: true}` step right after it, run as one sweep (GPTQ inside
    SparseGPT's column loop). Not a recipe step: `plan_steps` builds it from the two."""

    NAME: ClassVar[str] = "prune+quantize"

    prune: Prune
    quantize: Quantize


def plan_steps(steps: list[Any]) -> list[Any]:
    """The units `run_steps` hands to handlers: the steps in order, with each joint quantize step paired
    with the prune step before it (the method check is the prune step's traits, in `run_prune_quantize`)."""
    units: list[Any] = []
    for i, step in enumerate(steps):
        if isinstance(step, Quantize) and step.joint:
            if not units or not isinstance(units[-1], Prune):
                raise SparsekitError(f"recipe step {i + 1} (quantize): joint: true needs a prune step right before "
                                     "it, whose sweep it runs in")
            units[-1] = PruneQuantizeJoint(units[-1], step)
        else:
            units.append(step)
    return units


def check_step_shapes(adapter: Adapter, step: Any) -> None:
    """Raise (naming the module) if a step's N:M pattern or scale groups cannot tile a targeted weight.
    Structured steps are not checked: they change shapes and check what they remove when they run."""
    if isinstance(step, Prune):
        check_prune_shapes(adapter, step)
    elif isinstance(step, Quantize):
        check_quantize_shapes(adapter, step)
    elif not isinstance(step, (*STRUCTURED_STEPS, Heal, Reconstruct)):
        raise SparsekitError(f"recipe step {type(step).__name__} has no shape check in sparsekit.steps.run")


HANDLERS: dict[type, Callable[[Any, StepState], None]] = {}


def handles(*types: type) -> Callable:
    def register(fn: Callable[[Any, StepState], None]) -> Callable[[Any, StepState], None]:
        for t in types:
            HANDLERS[t] = fn
        return fn
    return register


def _keep_masks(st: StepState, out: PruneResult) -> None:
    """Add a prune step's masks; a later prune step keeps what earlier ones removed."""
    for key in set(out.masks) & set(st.masks):
        out.masks[key] = out.masks[key] & st.masks[key]
    st.masks.update(out.masks)


@handles(Prune)
def _prune(step: Prune, st: StepState) -> None:
    out = run_prune(st.model, st.adapter, step, st.ids, device=st.device, progress=st.progress, settings=st.calib)
    _keep_masks(st, out)
    st.records.append(out.record())


@handles(PruneQuantizeJoint)
def _prune_quantize_joint(unit: PruneQuantizeJoint, st: StepState) -> None:
    pruned, quantized = run_prune_quantize(st.model, st.adapter, unit.prune, unit.quantize, st.ids,
                                           device=st.device, progress=st.progress, settings=st.calib)
    _keep_masks(st, pruned)
    st.qtensors.update(quantized.qtensors)
    st.records.append(pruned.record())
    st.records.append(quantized.record())


@handles(Quantize)
def _quantize(step: Quantize, st: StepState) -> None:
    # (a joint step never gets here: plan_steps pairs it with its prune step, and run_quantize refuses it)
    done = {name for r in st.records if isinstance(r, QuantizeRecord) for name in r.modules}
    twice = sorted({t.name for t in step_targets(st.adapter, step)} & done)
    if twice:
        raise SparsekitError(f"quantize: {', '.join(twice[:3])} would be quantized by two steps; give each quantize "
                             "step its own modules (exclude them from one)")
    out = run_quantize(st.model, st.adapter, step, st.ids, masks=st.masks, device=st.device, progress=st.progress,
                       settings=st.calib)
    st.qtensors.update(out.qtensors)
    st.records.append(out.record())


@handles(Heal)
def _heal(step: Heal, st: StepState) -> None:
    if (st.teacher is None and step.teacher is None) or st.windows is None:
        raise SparsekitError("heal needs the model as it entered the recipe and C4 windows; run it through "
                             "sparsekit.compress, which keeps both")
    teacher = st.teacher
    if step.teacher is not None:
        from sparsekit.models.loader import load_model

        teacher, _ = load_model(step.teacher, dtype="float32", device=str(module_device(st.model)))
        vocab = (teacher.get_output_embeddings().weight.shape[0], st.model.get_output_embeddings().weight.shape[0])
        if vocab[0] != vocab[1]:
            raise SparsekitError(f"heal: teacher {step.teacher} has a vocabulary of {vocab[0]} tokens, the model "
                                 f"{vocab[1]}; distillation compares their next-token distributions")
    masks = dict(st.masks)
    for i in range(st.adapter.num_blocks):  # zeros from an earlier run (a loaded checkpoint) stay zeros too
        for rel, lin in st.adapter.linears(i).items():
            name = f"{st.adapter.blocks_path}.{i}.{rel}"
            if name not in masks and bool((lin.weight == 0).any()):
                masks[name] = lin.weight != 0
    out = run_heal(st.model, teacher, st.adapter, step, masks, st.windows, settings=st.calib,
                   progress=st.progress)
    st.records.append(HealRecord(seconds=out.seconds, steps=out.steps, tokens=out.tokens, loss_first=out.loss_first,
                                 loss_last=out.loss_last, resumed_from=out.resumed_from,
                                 loss_curve=out.loss_curve, first_step_seconds=out.first_step_seconds))


@handles(Reconstruct)
def _reconstruct(step: Reconstruct, st: StepState) -> None:
    if st.teacher is None or st.ids is None:
        raise SparsekitError("reconstruct needs the model as it entered the recipe and calibration windows; run it "
                             "through sparsekit.compress, which keeps both")
    out = run_reconstruct(st.model, st.teacher, st.adapter, step, st.ids, device=st.device, progress=st.progress,
                          settings=st.calib)
    st.records.append(ReconstructRecord(seconds=out.seconds, blocks=out.blocks))


@handles(PruneHeads, PruneChannels, PruneExperts)
def _prune_width(step: PruneHeads | PruneChannels | PruneExperts, st: StepState) -> None:
    run = run_prune_experts if isinstance(step, PruneExperts) else run_prune_width
    out = run(st.model, st.adapter, step, st.ids, device=st.device, progress=st.progress)
    st.records.append(WidthRecord(step=step.NAME, seconds=out.seconds, params_removed=out.params_removed,
                                  kept=out.scores["kept"]))


@handles(StructuredSearch)
def _structured_search(step: StructuredSearch, st: StepState) -> None:
    out = run_structured_search(st.model, st.adapter, step, st.ids, device=st.device, progress=st.progress)
    st.records.append(SearchRecord(seconds=out.seconds, params_before=out.params_before,
                                   params_removed=out.params_removed, widths=out.widths, rounds=out.rounds,
                                   speedup=out.speedup))


@handles(DropSublayers)
def _drop_sublayers(step: DropSublayers, st: StepState) -> None:
    out = run_drop_sublayers(st.model, st.adapter, step, st.ids, progress=st.progress)
    st.records.append(DropSublayersRecord(seconds=out.seconds, removed=[(int(i), str(k)) for i, k in out.removed],
                                          params_removed=out.params_removed, scores=out.scores))


@handles(DropBlocks)
def _drop_blocks(step: DropBlocks, st: StepState) -> None:
    out = run_drop_blocks(st.model, st.adapter, step, st.ids, device=st.device, progress=st.progress)
    st.records.append(DropBlocksRecord(seconds=out.seconds, method=step.method, removed=out.removed, kept=out.kept,
                                       params_removed=out.params_removed, scores=out.scores))


def run_steps(steps: list[Any], state: StepState) -> StepState:
    """Apply `steps` in order through their handlers (joint steps paired first, see `plan_steps`)."""
    for unit in plan_steps(steps):
        handler = HANDLERS.get(type(unit))
        if handler is None:
            raise SparsekitError(f"recipe step {type(unit).__name__} has no handler in sparsekit.steps.run")
        handler(unit, state)
    return state
