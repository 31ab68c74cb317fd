"""`allocation: search`: measure how much each module can be pruned, then spend a global budget.

"Let the model tell what to prune and how much" (seed 003): instead of one ratio for every Linear,
each projection of each block gets its own sparsity, chosen from measured sensitivities under a
global budget of removed parameters (`sparsity` x the targeted weights).

**Measurement** (on the first `search.nsamples` calibration windows, dense model, one pass):

1. *Block damage.* Block i alone is pruned with the step's method at the target sparsity, and the
   rest of the (dense) model runs on its output. `KL_i` = mean over tokens of
   KL(p_dense || p_pruned) of the next-token distributions: a non-negative, low-noise loss change.
2. *Module share.* Inside block i, module m alone is pruned at each ratio r of `search.ratios`, and
   `e_m(r)` = ||B'(x) - B(x)||^2 / ||B(x)||^2 is the relative error of the block output (the residual
   stream). With e_i the same error for the whole block pruned at the target, the cost of module m at
   ratio r is

       c_m(r) = KL_i * e_m(r) / e_i,

   i.e. the block's measured damage apportioned to its modules by their share of its output error.
   This makes q/k (whose errors pass through a softmax) comparable with v/o/gate/up/down, and early
   blocks comparable with late ones, at the price of 1 + |ratios| block forwards per module and one
   rest-of-model forward per block: a few minutes for SmolLM2-135M on two CPU cores.

**Allocation.** `sparsekit.prune.allocation.allocate_budget`: costs are taken as additive over modules
and linear between measured ratios; on each curve's lower convex hull, segments are taken in order
of cost per removed weight (the normalised-impact-per-parameter idea of NRI, seed 002) until the budget
is spent, then rounded to whole selection steps. The largest search ratio caps every module.
"""

from __future__ import annotations

import logging
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from sparsekit.calib.engine import LayerwiseCalibrator, block_output, module_device
from sparsekit.models.adapters import Adapter
from sparsekit.prune.allocation import CostCurve, allocate_budget
from sparsekit.prune.methods import granularity, prune_weight
from sparsekit.recipe import Prune
from sparsekit.steps.targets import Target, by_block

log = logging.getLogger(__name__)


def _rel_err(out: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    num = sum(float((o.float() - r.float()).pow(2).sum()) for o, r in zip(out, ref))
    den = sum(float(r.float().pow(2).sum()) for r in ref)
    return num / den if den > 0 else 0.0


@torch.no_grad()
def _log_probs(adapter: Adapter, hidden: torch.Tensor, device: torch.device) -> torch.Tensor:
    norm, head = adapter.final_norm, adapter.lm_head
    homes = (module_device(norm), module_device(head))
    norm.to(device)
    head.to(device)
    try:
        logits = head(norm(hidden.to(device))).float()
    finally:
        norm.to(homes[0])
        head.to(homes[1])
    return torch.log_softmax(logits, dim=-1)


@torch.no_grad()
def measure_costs(model: nn.Module, adapter: Adapter, step: Prune, targets: list[Target],
                  calib_ids: torch.Tensor, device: torch.device, progress: bool = True
                  ) -> tuple[dict[str, CostCurve], dict]:
    """Cost curves per target module (see module docstring) and the raw measurements."""
    grid = tuple(step.search.ratios)
    groups = by_block(targets)
    rels = list(dict.fromkeys(t.rel for t in targets))
    needs = step.traits.stats  # what the method reads: None, 'sum_sq' or 'hessian'
    calib = LayerwiseCalibrator(model, adapter=adapter, device=device, hessian=needs == "hessian",
                                stats=needs is not None, linears=rels, sequential=False, progress=False)

    def prune(linear: nn.Linear, weight: torch.Tensor, stats, ratio: float) -> None:
        new, _ = prune_weight(step.method, weight, stats, ratio, step.pattern, blocksize=step.blocksize,
                              dampening=step.dampening)
        linear.weight.data.copy_(new)

    module_err: dict[str, list[float]] = {}
    block_err: dict[int, float] = {}
    perturbed: dict[int, list[torch.Tensor]] = {}
    bar = tqdm(total=len(targets) * len(grid) + len(groups), desc="search: module sensitivity", unit="probe",
               disable=not progress)
    for ctx in calib.blocks(calib_ids):
        ts = groups.get(ctx.index)
        if not ts:
            continue
        linears = ctx.linears()
        saved = {t.rel: linears[t.rel].weight.data.clone() for t in ts}
        stats = {t.rel: ctx.stats.get(t.rel) for t in ts}
        for t in ts:
            errs = []
            for r in grid:
                prune(linears[t.rel], saved[t.rel], stats[t.rel], r)
                errs.append(_rel_err(ctx.forward(), ctx.outputs))
                linears[t.rel].weight.data.copy_(saved[t.rel])
                bar.update()
            module_err[t.name] = errs
        for t in ts:
            prune(linears[t.rel], saved[t.rel], stats[t.rel], step.sparsity)
        out = ctx.forward()
        block_err[ctx.index] = _rel_err(out, ctx.outputs)
        perturbed[ctx.index] = [o.cpu() for o in out]
        for t in ts:
            linears[t.rel].weight.data.copy_(saved[t.rel])
        bar.update()
    bar.close()
    dense_final = [h.cpu() for h in calib.final_hidden]

    # rest-of-model forwards: advance every perturbed stream through the later blocks, one block visit each
    _, kwargs = calib.capture(calib_ids)
    for j in tqdm(range(adapter.num_blocks), desc="search: block damage", unit="block", disable=not progress):
        later = [i for i in perturbed if i < j]
        if not later:
            continue
        block = adapter.blocks[j]
        home = module_device(block)
        block.to(device)
        try:
            for i in later:
                perturbed[i] = [block_output(block(x.to(device), **kw)).cpu()
                                for x, kw in zip(perturbed[i], kwargs[j])]
        finally:
            block.to(home)
    dense_lp = [_log_probs(adapter, h, device).cpu() for h in dense_final]
    block_kl: dict[int, float] = {}
    for i, hidden in perturbed.items():
        kl = tokens = 0.0
        for h, lp in zip(hidden, dense_lp):
            lq = _log_probs(adapter, h, device).cpu()
            kl += float((lp.exp() * (lp - lq)).sum())
            tokens += lp.shape[0] * lp.shape[1]
        block_kl[i] = max(kl / tokens, 0.0)

    curves = {}
    for t in targets:
        shape = tuple(adapter.linears(t.block)[t.rel].weight.shape)
        gain = block_kl[t.block] / block_err[t.block] if block_err[t.block] > 0 else 0.0
        curves[t.name] = CostCurve(size=shape[0] * shape[1], granularity=granularity(step.method, step.pattern, shape),
                                   ratios=grid, costs=tuple(gain * e for e in module_err[t.name]))
    info = {"ratios": list(grid), "nsamples": int(calib_ids.shape[0]),
            "block_kl": {str(i): v for i, v in block_kl.items()},
            "block_error": {str(i): v for i, v in block_err.items()},
            "module_error": module_err}
    return curves, info


def search_ratios(model: nn.Module, adapter: Adapter, step: Prune, targets: list[Target], calib_ids: torch.Tensor,
                  device: torch.device, progress: bool = True) -> tuple[dict[str, float], dict]:
    """Sparsity per target module chosen by sensitivity under the global budget (module docstring)."""
    ids = calib_ids[: step.search.nsamples]
    curves, info = measure_costs(model, adapter, step, targets, ids, device, progress)
    total = sum(c.size for c in curves.values())
    budget = int(round(step.sparsity * total))
    removed = allocate_budget(curves, budget)
    ratios = {name: removed[name] / curves[name].size for name in curves}
    info.update(budget=budget, removed=sum(removed.values()), total=total)
    by_role: dict[str, list[float]] = {}
    for t in targets:
        by_role.setdefault(t.role, []).append(ratios[t.name])
    log.info("search allocation (mean sparsity per type): %s",
             ", ".join(f"{role} {sum(v) / len(v):.2f}" for role, v in by_role.items()))
    return ratios, info
