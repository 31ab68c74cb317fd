"""Run a `Prune` recipe step over a model: pick the modules, allocate ratios, prune block by block.

Order of work:

1. **Targets.** Every block projection whose full name matches `targets` and no `exclude` pattern.
   N:M patterns are checked against every target's shape before anything changes.
2. **Allocation** (ratio per module): uniform, per-type, global magnitude threshold, OWL (one dense
   calibration pass for the outlier ratios) or search (`sparsekit.steps.sensitivity`).
3. **Pruning.** Magnitude needs no data and prunes module by module. Wanda / RIA / SparseGPT run inside
   the layer-wise calibrator: block i's statistics are taken on the outputs of the already-pruned
   blocks 0..i-1 (sequential mode of both papers) unless `sequential: false`. Per block: the channel
   permutation (`permute`), the masks (refined by DSnoT with `dsnot`), then block-wise reconstruction
   of the kept weights (`reconstruct`) before the block's outputs feed the next one.

The model is modified in place; the keep-masks are returned with per-module results.

`run_prune_quantize` runs a SparseGPT step and a `quantize: {joint: true}` step as one sweep (GPTQ
inside SparseGPT's column loop) and returns both steps' results.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from sparsekit.calib.engine import CalibSettings, LayerwiseCalibrator
from sparsekit.calib.stats import LinearStats
from sparsekit.errors import SparsekitError
from sparsekit.models import surgery
from sparsekit.models.adapters import Adapter
from sparsekit.prune.allocation import global_threshold_counts, outlier_ratio, owl_ratios, per_type_ratios
from sparsekit.prune.magnitude import magnitude_scores
from sparsekit.prune.methods import method_scores, methods_with, prune_weight
from sparsekit.prune.moe_pruner import accumulate_expert_stats, moe_pruner_masks
from sparsekit.prune.patterns import check_shape, masks_sparsity, parse_pattern
from sparsekit.prune.permute import nm_permutation
from sparsekit.prune.reconstruct import reconstruct_block
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
    reconstruction: dict[str, list[float]] = field(default_factory=dict)  # block -> [error before, after]
    permuted: dict[str, int] = field(default_factory=dict)  # module -> input channels moved (permute)

    @property
    def sparsity(self) -> float:
        """Fraction of the targeted weights removed by the masks."""
        return masks_sparsity(self.masks)

    def record(self) -> PruneRecord:
        """What a checkpoint stores about this step."""
        return PruneRecord(seconds=self.seconds, modules=dict(self.modules), sparsity=self.sparsity,
                           allocation=self.allocation_info, reconstruction=dict(self.reconstruction),
                           permuted=dict(self.permuted))


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
                device: torch.device, progress: bool, settings: CalibSettings | None = None
                ) -> tuple[dict[str, float], dict]:
    """OWL's first pass: Wanda scores of the dense model, outlier ratio per block, ratios per block."""
    groups = by_block(targets)
    calib = LayerwiseCalibrator(model, adapter=adapter, device=device, linears=_block_rels(targets),
                                sequential=False, settings=settings, progress=progress)
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
             device: torch.device, progress: bool, settings: CalibSettings | None = None
             ) -> tuple[dict[str, float], dict]:
    """Sparsity per targeted module (full name) and a record of how it was decided. (The search measures
    output errors, which bf16 rounding would blur: it calibrates in fp32 whatever `settings` says.)"""
    if step.allocation == "uniform":
        return {t.name: step.sparsity for t in targets}, {}
    if step.allocation == "per_type":
        return per_type_ratios({t.name: t.role for t in targets}, step.ratios, step.sparsity), {}
    if step.allocation == "global":
        return _global_ratios(adapter, step, targets), {}
    if calib_ids is None:
        raise SparsekitError(f"allocation {step.allocation!r} needs calibration data")
    if step.allocation == "owl":
        return _owl_ratios(model, adapter, step, targets, calib_ids, device, progress, settings)
    if step.allocation == "search":
        from sparsekit.steps.sensitivity import search_ratios

        return search_ratios(model, adapter, step, targets, calib_ids, device, progress)
    raise SparsekitError(f"unknown allocation {step.allocation!r}")


def _prune_one(linear: nn.Linear, step: Prune, stats, ratio: float, joint: Quantize | None = None,
               name: str = "weight") -> tuple[torch.Tensor, QTensor | None]:
    q = None
    if joint is None:
        dsnot = None if step.dsnot is None else (step.dsnot.max_cycles, step.dsnot.var_power)
        new, mask = prune_weight(step.method, linear.weight.data, stats, ratio, step.pattern,
                                 blocksize=step.blocksize, dampening=step.dampening, dsnot=dsnot)
    else:
        new, mask, q = sparsegpt_gptq(linear.weight.data, stats.xtx, joint.quant_format(), ratio, step.pattern,
                                      blocksize=step.blocksize, dampening=step.dampening, name=name)
        q = q.cpu()
    linear.weight.data.copy_(new)
    return mask.cpu(), q


def _permutation_scores(step: Prune, weight: torch.Tensor, stats: LinearStats) -> torch.Tensor:
    """What the channel permutation maximises: the method's own score, or Wanda's for a method that has
    none (SparseGPT's OBS saliency changes as it updates weights; |W| ||X|| is its first-column value)."""
    return method_scores(step.method if step.traits.refinable else "wanda", weight, stats)


def _permute_stats(stats: LinearStats, order: torch.Tensor) -> None:
    order = order.to(stats.sum_sq.device)
    stats.sum_sq = stats.sum_sq[order]
    if stats.sum_x is not None:
        stats.sum_x = stats.sum_x[order]
    if stats.xtx is not None:
        stats.xtx = stats.xtx[order][:, order]


def permute_block(adapter: Adapter, step: Prune, index: int, linears: dict[str, nn.Linear],
                  stats: dict[str, LinearStats], targets: list[Target]) -> dict[str, int]:
    """Reorder the channels of block `index` that can be reordered exactly (MLP intermediate channels,
    value channels within heads) so that the N:M masks of the targeted down_proj / o_proj keep more
    score; the block's function is unchanged and its statistics are reordered with it. Returns, per
    permuted projection, how many channels moved."""
    pattern = parse_pattern(step.pattern)
    moved: dict[str, int] = {}
    by_role = {t.role: t for t in targets}
    down = by_role.get("down")
    if down is not None and adapter.spec.experts is None:
        perm = nm_permutation(_permutation_scores(step, linears[down.rel].weight, stats[down.rel]), pattern)
        surgery.permute_mlp_channels(adapter, index, perm)
        _permute_stats(stats[down.rel], perm)
        moved[down.rel] = int((perm != torch.arange(perm.numel())).sum())
    o = by_role.get("o")
    if o is not None:
        q_heads, kv_heads, d = surgery.attention_geometry(adapter, index)
        if d % pattern.m == 0:
            scores = _permutation_scores(step, linears[o.rel].weight, stats[o.rel])
            per = q_heads // kv_heads
            perms = torch.stack([
                nm_permutation(torch.cat([scores[:, h * d:(h + 1) * d] for h in range(g * per, (g + 1) * per)]),
                               pattern) for g in range(kv_heads)])
            order = surgery.permute_value_channels(adapter, index, perms)
            _permute_stats(stats[o.rel], order)
            moved[o.rel] = int((order != torch.arange(order.numel())).sum())
    return moved


def _check_joint(adapter: Adapter, step: Prune, joint: Quantize, targets: list[Target]) -> None:
    """A joint quantize step runs in the prune step's sweep: the method must have one, the two steps must
    target the same projections, and the quantize step's own checks must pass on them."""
    if not step.traits.joint_quantization:
        raise SparsekitError("joint quantization runs inside the column sweep of "
                             f"{' or '.join(methods_with('joint_quantization'))}; the prune method is {step.method!r}")
    if not joint.traits.joint:
        raise SparsekitError(f"quantize: method {joint.method!r} cannot run inside a pruning sweep (joint: true)")
    if step.reconstruct is not None:
        raise SparsekitError("prune: reconstruct refits the kept weights after the sweep, which would undo the "
                             "joint quantization; quantize in a separate step after the prune step (reconstruction "
                             "then runs before quantization)")
    if [t.name for t in step_targets(adapter, joint)] != [t.name for t in targets]:
        raise SparsekitError(f"quantize: joint: true needs the same targets/exclude as the {step.method} prune step "
                             "it runs in")
    check_quantize_targets(adapter, joint, targets)


def run_prune(model: nn.Module, adapter: Adapter, step: Prune, calib_ids: torch.Tensor | None = None, *,
              device: torch.device | str = "cpu", progress: bool = True, joint: Quantize | None = None,
              settings: CalibSettings | None = None) -> PruneResult:
    """Apply `step` to `model` in place and return masks and per-module results.

    `settings`: batch size and precision of the calibration forwards (`CalibSettings`).
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
    ratios, info = allocate(model, adapter, step, targets, calib_ids, device, progress, settings)
    result = PruneResult(targets, ratios, allocation_info=info)

    stats = step.traits.stats
    if stats is None:
        for t in tqdm(targets, desc=f"{step.method} pruning", unit="module", disable=not progress):
            result.masks[t.name], _ = _prune_one(_linear(adapter, t), step, None, ratios[t.name])
    else:
        groups = by_block(targets)
        calib = LayerwiseCalibrator(model, adapter=adapter, device=device, hessian=stats == "hessian",
                                    linears=_block_rels(targets), sequential=step.sequential, settings=settings,
                                    progress=progress)
        to_model = step.reconstruct is not None and step.reconstruct.target == "model"
        for ctx in calib.blocks(calib_ids, dense_stream=to_model):
            linears = ctx.linears()
            block_targets = groups.get(ctx.index, [])
            if step.permute and block_targets:
                moved = permute_block(adapter, step, ctx.index, linears, ctx.stats, block_targets)
                result.permuted.update({f"{ctx.name}.{rel}": n for rel, n in moved.items()})
            for t in block_targets:
                result.masks[t.name], q = _prune_one(linears[t.rel], step, ctx.stats[t.rel], ratios[t.name], joint,
                                                     t.name)
                if q is not None:
                    result.qtensors[t.name] = q
                ctx.stats[t.rel] = None  # type: ignore[assignment]  # free the Hessian early
            if step.reconstruct is not None and block_targets:
                # ctx.outputs: the dense block on these inputs; ctx.dense_outputs: the original model here
                fit = reconstruct_block(ctx.block, {t.rel: linears[t.rel] for t in block_targets},
                                        {t.rel: result.masks[t.name] for t in block_targets}, ctx.forward_batch,
                                        ctx.dense_outputs if to_model else ctx.outputs,
                                        epochs=step.reconstruct.epochs, lr=step.reconstruct.lr,
                                        train_batches=math.ceil(step.reconstruct.nsamples / calib.batch_size),
                                        schedule=step.reconstruct.schedule)
                result.reconstruction[str(ctx.index)] = [fit.before, fit.after]
    for t in targets:
        mask = result.masks[t.name]
        result.modules[t.name] = PrunedModule(t.role, tuple(mask.shape), ratios[t.name],
                                              1.0 - float(mask.float().mean()), step.pattern)
    if step.experts:
        _prune_expert_weights(model, adapter, step, calib_ids, device, progress, result, settings)
    result.seconds = time.perf_counter() - start
    return result


def run_prune_quantize(model: nn.Module, adapter: Adapter, step: Prune, quantize: Quantize,
                       calib_ids: torch.Tensor | None = None, *, device: torch.device | str = "cpu",
                       progress: bool = True, settings: CalibSettings | None = None
                       ) -> tuple[PruneResult, QuantizeResult]:
    """A SparseGPT prune step and a `quantize: {joint: true}` step in one sweep: every column SparseGPT
    keeps is quantized (GPTQ) before the error is pushed onward. Returns both steps' results; the
    quantize result holds the codes + scales and its time is counted in the prune result's."""
    if not quantize.joint:
        raise SparsekitError("run_prune_quantize runs a quantize step with joint: true; run a separate quantize "
                             "step with run_quantize")
    pruned = run_prune(model, adapter, step, calib_ids, device=device, progress=progress, joint=quantize,
                       settings=settings)
    quantized = QuantizeResult(pruned.targets, joint=True)
    for t in pruned.targets:
        quantized.modules[t.name] = module_record(t, quantize, tuple(pruned.masks[t.name].shape))
        quantized.qtensors[t.name] = pruned.qtensors[t.name]
    return pruned, quantized


@torch.no_grad()
def _prune_expert_weights(model: nn.Module, adapter: Adapter, step: Prune, calib_ids: torch.Tensor,
                          device: torch.device, progress: bool, result: PruneResult,
                          settings: CalibSettings | None = None) -> None:
    """MoE-Pruner inside the fused experts (`sparsekit.prune.moe_pruner`), block by block, sequentially."""
    if adapter.spec.experts is None:
        raise SparsekitError(f"prune: experts: true needs a mixture-of-experts model; '{adapter.spec.name}' has none")
    calib = LayerwiseCalibrator(model, adapter=adapter, device=device, stats=False, sequential=step.sequential,
                                settings=settings, progress=progress)
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
