"""Run a `Prune` recipe step over a model: pick the modules, allocate ratios, prune block by block.

Order of work:

1. **Targets.** Every block projection whose full name matches `targets` and no `exclude` pattern.
   N:M patterns are checked against every target's shape before anything changes.
2. **Allocation** (ratio per module): uniform, per-type, global magnitude threshold, OWL (one dense
   calibration pass for the outlier ratios) or search (`sparsekit.steps.sensitivity`).
3. **Pruning.** Magnitude needs no data and prunes module by module. Wanda / SparseGPT run inside
   the layer-wise calibrator: block i's statistics are taken on the outputs of the already-pruned
   blocks 0..i-1 (sequential mode of both papers) unless `sequential: false`.

The model is modified in place; the keep-masks are returned with per-module results.

`run_prune_quantize` runs a SparseGPT step and a `quantize: {joint: true}` step as one sweep (GPTQ
inside SparseGPT's column loop) and returns both steps' results.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from sparsekit.calib.engine import LayerwiseCalibrator
from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import Adapter
from sparsekit.prune.allocation import global_threshold_counts, outlier_ratio, owl_ratios, per_type_ratios
from sparsekit.prune.magnitude import magnitude_scores
from sparsekit.prune.methods import methods_with, prune_weight
from sparsekit.prune.moe_pruner import accumulate_expert_stats, moe_pruner_masks
from sparsekit.prune.patterns import check_shape, masks_sparsity, parse_pattern
from sparsekit.prune.wanda import wanda_scores
from sparsekit.quant.base import QTensor
from sparsekit.quant.gptq import sparsegpt_gptq
from sparsekit.recipe import Prune, Quantize
from sparsekit.steps.quantize import QuantizeResult, check_quantize_targets, module_record
from sparsekit.steps.records import PrunedModule, PruneRecord
from sparsekit.steps.targets import Target, by_block, module_of, own_weights, step_targets
from sparsekit.utils.device import resolve_device

log = logging.getLogger(__name__)


@dataclass
class PruneResult:
    """Per-module outcome of a prune step."""

    targets: list[Target]
    ratios: dict[str, float]                 # allocated sparsity per full module name
    masks: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # keep-masks (bool, CPU)
    modules: dict[str, PrunedModule] = field(default_factory=dict)
    seconds: float = 0.0
    allocation_info: dict = field(default_factory=dict)
    qtensors: dict[str, QTensor] = field(default_factory=dict, repr=False)  # joint quantization: codes + scales

    @property
    def sparsity(self) -> float:
        """Fraction of the targeted weights removed by the masks."""
        return masks_sparsity(self.masks)

    def record(self) -> PruneRecord:
        """What a checkpoint stores about this step."""
        return PruneRecord(seconds=self.seconds, modules=dict(self.modules), sparsity=self.sparsity,
                           allocation=self.allocation_info)


def _linear(adapter: Adapter, t: Target) -> nn.Linear:
    return module_of(adapter, t)


def check_prune_shapes(adapter: Adapter, step: Prune, targets: list[Target] | None = None) -> None:
    """Raise (naming the module) if the step's N:M pattern cannot tile a targeted weight; `targets`
    defaults to what the step selects."""
    if targets is None:
        targets = step_targets(adapter, step)
    pattern = parse_pattern(step.pattern)
    for t in targets:
        check_shape(pattern, tuple(_linear(adapter, t).weight.shape), t.name)


def _block_rels(targets: list[Target]) -> list[str]:
    seen: dict[str, None] = {}
    for t in targets:
        seen.setdefault(t.rel)
    return list(seen)


def _global_ratios(adapter: Adapter, step: Prune, targets: list[Target]) -> dict[str, float]:
    scores = {t.name: magnitude_scores(_linear(adapter, t).weight) for t in targets}
    total = sum(s.numel() for s in scores.values())
    counts = global_threshold_counts(scores, int(round(step.sparsity * total)))
    return {name: counts[name] / scores[name].numel() for name in scores}


def _owl_ratios(model: nn.Module, adapter: Adapter, step: Prune, targets: list[Target], calib_ids: torch.Tensor,
                device: torch.device, progress: bool) -> tuple[dict[str, float], dict]:
    """OWL's first pass: Wanda scores of the dense model, outlier ratio per block, ratios per block."""
    groups = by_block(targets)
    calib = LayerwiseCalibrator(model, adapter=adapter, device=device, linears=_block_rels(targets),
                                sequential=False, progress=progress)
    outliers: dict[int, float] = {}
    for ctx in calib.blocks(calib_ids):
        ts = groups.get(ctx.index, [])
        if ts:
            lin = ctx.linears()
            outliers[ctx.index] = outlier_ratio([wanda_scores(lin[t.rel].weight, ctx.stats[t.rel].sum_sq) for t in ts],
                                                step.owl.threshold)
    blocks = sorted(outliers)
    per_block = dict(zip(blocks, owl_ratios([outliers[b] for b in blocks], step.sparsity, step.owl.spread)))
    info = {"outlier_ratio": {str(b): outliers[b] for b in blocks}, "block_sparsity": {str(b): per_block[b]
                                                                                     for b in blocks}}
    return {t.name: per_block[t.block] for t in targets}, info


def allocate(model: nn.Module, adapter: Adapter, step: Prune, targets: list[Target], calib_ids: torch.Tensor | None,
             device: torch.device, progress: bool) -> tuple[dict[str, float], dict]:
    """Sparsity per targeted module (full name) and a record of how it was decided."""
    if step.allocation == "uniform":
        return {t.name: step.sparsity for t in targets}, {}
    if step.allocation == "per_type":
        return per_type_ratios({t.name: t.role for t in targets}, step.ratios, step.sparsity), {}
    if step.allocation == "global":
        return _global_ratios(adapter, step, targets), {}
    if calib_ids is None:
        raise SparsekitError(f"allocation {step.allocation!r} needs calibration data")
    if step.allocation == "owl":
        return _owl_ratios(model, adapter, step, targets, calib_ids, device, progress)
    if step.allocation == "search":
        from sparsekit.steps.sensitivity import search_ratios

        return search_ratios(model, adapter, step, targets, calib_ids, device, progress)
    raise SparsekitError(f"unknown allocation {step.allocation!r}")


def _prune_one(linear: nn.Linear, step: Prune, stats, ratio: float, joint: Quantize | None = None,
               name: str = "weight") -> tuple[torch.Tensor, QTensor | None]:
    q = None
    if joint is None:
        new, mask = prune_weight(step.method, linear.weight.data, stats, ratio, step.pattern,
                                 blocksize=step.blocksize, dampening=step.dampening)
    else:
        new, mask, q = sparsegpt_gptq(linear.weight.data, stats.xtx, joint.quant_format(), ratio, step.pattern,
                                      blocksize=step.blocksize, dampening=step.dampening, name=name)
        q = q.cpu()
    linear.weight.data.copy_(new)
    return mask.cpu(), q


def _check_joint(adapter: Adapter, step: Prune, joint: Quantize, targets: list[Target]) -> None:
    """A joint quantize step runs in the prune step's sweep: the method must have one, the two steps must
    target the same projections, and the quantize step's own checks must pass on them."""
    if not step.traits.joint_quantization:
        raise SparsekitError("joint quantization runs inside the column sweep of "
                             f"{' or '.join(methods_with('joint_quantization'))}; the prune method is {step.method!r}")
    if not joint.traits.joint:
        raise SparsekitError(f"quantize: method {joint.method!r} cannot run inside a pruning sweep (joint: true)")
    if [t.name for t in step_targets(adapter, joint)] != [t.name for t in targets]:
        raise SparsekitError(f"quantize: joint: true needs the same targets/exclude as the {step.method} prune step "
                             "it runs in")
    check_quantize_targets(adapter, joint, targets)


def run_prune(model: nn.Module, adapter: Adapter, step: Prune, calib_ids: torch.Tensor | None = None, *,
              device: torch.device | str = "cpu", progress: bool = True, joint: Quantize | None = None
              ) -> PruneResult:
    """Apply `step` to `model` in place and return masks and per-module results.

    `joint`: a `Quantize` step (method gptq) to run inside SparseGPT's sweep (prune + quantize at once);
    its targets must be the prune step's targets, and the codes land in `result.qtensors`.
    `run_prune_quantize` does the same and also returns the quantize step's result.
    """
    start = time.perf_counter()
    targets = step_targets(adapter, step)
    check_prune_shapes(adapter, step, targets)
    if joint is not None:
        _check_joint(adapter, step, joint, targets)
    if step.needs_data and calib_ids is None:
        raise SparsekitError(f"prune: method {step.method!r} with allocation {step.allocation!r} needs calibration "
                             "data (calib_ids)")
    own_weights(adapter, targets)
    device = resolve_device(device)
    ratios, info = allocate(model, adapter, step, targets, calib_ids, device, progress)
    result = PruneResult(targets, ratios, allocation_info=info)

    stats = step.traits.stats
    if stats is None:
        for t in tqdm(targets, desc=f"{step.method} pruning", unit="module", disable=not progress):
            result.masks[t.name], _ = _prune_one(_linear(adapter, t), step, None, ratios[t.name])
    else:
        groups = by_block(targets)
        calib = LayerwiseCalibrator(model, adapter=adapter, device=device, hessian=stats == "hessian",
                                    linears=_block_rels(targets), sequential=step.sequential, progress=progress)
        for ctx in calib.blocks(calib_ids):
            linears = ctx.linears()
            for t in groups.get(ctx.index, []):
                result.masks[t.name], q = _prune_one(linears[t.rel], step, ctx.stats[t.rel], ratios[t.name], joint,
                                                     t.name)
                if q is not None:
                    result.qtensors[t.name] = q
                ctx.stats[t.rel] = None  # type: ignore[assignment]  # free the Hessian early
    for t in targets:
        mask = result.masks[t.name]
        result.modules[t.name] = PrunedModule(t.role, tuple(mask.shape), ratios[t.name],
                                              1.0 - float(mask.float().mean()), step.pattern)
    if step.experts:
        _prune_expert_weights(model, adapter, step, calib_ids, device, progress, result)
    result.seconds = time.perf_counter() - start
    return result


def run_prune_quantize(model: nn.Module, adapter: Adapter, step: Prune, quantize: Quantize,
                       calib_ids: torch.Tensor | None = None, *, device: torch.device | str = "cpu",
                       progress: bool = True) -> tuple[PruneResult, QuantizeResult]:
    """A SparseGPT prune step and a `quantize: {joint: true}` step in one sweep: every column SparseGPT
    keeps is quantized (GPTQ) before the error is pushed onward. Returns both steps' results; the
    quantize result holds the codes + scales and its time is counted in the prune result's."""
    if not quantize.joint:
        raise SparsekitError("run_prune_quantize runs a quantize step with joint: true; run a separate quantize "
                             "step with run_quantize")
    pruned = run_prune(model, adapter, step, calib_ids, device=device, progress=progress, joint=quantize)
    quantized = QuantizeResult(pruned.targets, joint=True)
    for t in pruned.targets:
        quantized.modules[t.name] = module_record(t, quantize, tuple(pruned.masks[t.name].shape))
        quantized.qtensors[t.name] = pruned.qtensors[t.name]
    return pruned, quantized


@torch.no_grad()
def _prune_expert_weights(model: nn.Module, adapter: Adapter, step: Prune, calib_ids: torch.Tensor,
                          device: torch.device, progress: bool, result: PruneResult) -> None:
    """MoE-Pruner inside the fused experts (`sparsekit.prune.moe_pruner`), block by block, sequentially."""
    if adapter.spec.experts is None:
        raise SparsekitError(f"prune: experts: true needs a mixture-of-experts model; '{adapter.spec.name}' has none")
    calib = LayerwiseCalibrator(model, adapter=adapter, device=device, stats=False, sequential=step.sequential,
                                progress=progress)
    for ctx in calib.blocks(calib_ids):
        experts = adapter.experts(ctx.index)
        if experts is None or not hasattr(experts, "gate_up_proj"):
            continue
        stats: dict[str, torch.Tensor] = {}
        hook = experts.register_forward_hook(
            lambda m, args, _out: accumulate_expert_stats(stats, args[0], args[1], args[2], m.gate_up_proj, m.act_fn))
        try:
            ctx.forward()
        finally:
            hook.remove()
        for pname, key in (("gate_up_proj", "gate_up"), ("down_proj", "down")):
            param = getattr(experts, pname)
            mask = moe_pruner_masks(param, stats[key], step.sparsity, step.pattern)
            param.data.masked_fill_(~mask, 0)
            name = f"{adapter.blocks_path}.{ctx.index}.{adapter.spec.experts}.{pname}"
            result.masks[name] = mask.cpu()
            # (no pattern: checkpoints never recorded one for fused expert weights, which have no packed layout)
            result.modules[name] = PrunedModule("expert", tuple(mask.shape), step.sparsity,
                                                1.0 - float(mask.float().mean()))
