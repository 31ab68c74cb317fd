"""Run structured recipe steps over a model: measure, choose, then physically remove.

`drop_sublayers`: every candidate (a block's attention or MLP) is removed alone and the calibration
loss (mean next-token NLL on the first `nsamples` windows) is measured; its NRI, the relative loss
increase per parameter freed, ranks it (`score: cosine` instead compares the block's output with and
without the sublayer, 1 - cos per token, block by block on the dense model: much cheaper). The lowest-NRI candidates are removed until the parameter
budget is spent (or the requested number of each kind is reached).

`prune_channels` / `prune_heads`: one sequential pass of the layer-wise calibrator collects the input
statistics of each block's down (resp. output) projection; the block is shrunk right away, so the next
block is scored on what the shrunk block produces. Tensors physically shrink; widths may differ per
block (`blocks` selects which are pruned).

`prune_experts`: the same sequential pass records each MoE block's router logits on the calibration
tokens; the experts that receive the fewest tokens (or the least routing weight) are dropped.

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
from tqdm.auto import tqdm

from sparsekit.calib.engine import LayerwiseCalibrator
from sparsekit.models.adapters import Adapter
from sparsekit.errors import SparsekitError
from sparsekit.models.surgery import (SkippedAttention, SkippedMLP, attention_geometry, drop_blocks, drop_stack_blocks,
                                      drop_sublayer, prune_experts, prune_kv_groups, prune_mlp_channels,
                                      without_sublayer)
from sparsekit.prune.structured import (angular_span_distances, block_influence, channel_scores, choose_under_budget,
                                        expert_usage, keep_top, kv_group_scores, lowest, nri)
from sparsekit.recipe import DropBlocks, DropSublayers, PruneChannels, PruneExperts, PruneHeads
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
    start = time.perf_counter()
    if step.stack is not None:  # another stack (a vision tower): data-free choices only (see DropBlocks)
        try:
            total = len(model.get_submodule(step.stack))
        except (AttributeError, TypeError):
            raise SparsekitError(f"drop_blocks: {step.stack!r} is not a ModuleList of blocks in this model") from None
        removed = list(step.blocks) if step.method == "explicit" else list(range(total - step.n, total))
        kept, params = drop_stack_blocks(model, step.stack, removed)
        return StructuredResult(removed, kept, params, {}, time.perf_counter() - start)
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


@torch.no_grad()
def calibration_loss(model: nn.Module, ids: torch.Tensor, batch_size: int = 4) -> float:
    """Mean next-token NLL of `model` over the windows `ids` (on the model's device)."""
    device = next(model.parameters()).device
    total = count = 0.0
    for start in range(0, ids.shape[0], batch_size):
        batch = ids[start:start + batch_size].to(device)
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                                reduction="sum")
        total += float(nll)
        count += batch[:, 1:].numel()
    return total / count


def _present(adapter: Adapter, i: int, kind: str) -> bool:
    mod = adapter.attention(i) if kind == "attention" else adapter.mlp(i)
    return not isinstance(mod, (SkippedAttention, SkippedMLP))


def sublayer_scores(model: nn.Module, adapter: Adapter, step: DropSublayers, calib_ids: torch.Tensor,
                    progress: bool = True) -> tuple[dict, dict, float]:
    """Score (NRI or cosine, see `DropSublayers`) and parameter count of every candidate, and the base loss
    (None for the cosine score)."""
    ids = calib_ids[: step.nsamples]
    cands = [(i, k) for i in range(adapter.num_blocks) for k in step.candidates if _present(adapter, i, k)]
    params = {(i, k): sum(p.numel() for p in (adapter.attention(i) if k == "attention" else adapter.mlp(i))
                          .parameters()) for i, k in cands}
    scores = {}
    if step.score == "cosine":
        calib = LayerwiseCalibrator(model, adapter=adapter, stats=False, sequential=False, progress=progress)
        for ctx in calib.blocks(ids):
            for i, kind in [c for c in cands if c[0] == ctx.index]:
                with without_sublayer(adapter, i, kind):
                    scores[(i, kind)] = block_influence(ctx.outputs, ctx.forward())
        return scores, params, None
    base = calibration_loss(model, ids)
    for i, kind in tqdm(cands, desc="drop_sublayers: NRI", unit="candidate", disable=not progress):
        with without_sublayer(adapter, i, kind):
            scores[(i, kind)] = nri(base, calibration_loss(model, ids), params[(i, kind)])
    return scores, params, base


def run_drop_sublayers(model: nn.Module, adapter: Adapter, step: DropSublayers, calib_ids: torch.Tensor | None,
                       *, progress: bool = True) -> StructuredResult:
    """Apply `step` in place (see module docstring)."""
    start = time.perf_counter()
    if calib_ids is None:
        raise SparsekitError("drop_sublayers: NRI needs calibration data (calib_ids)")
    for kind, count in (("attention", step.attention), ("mlp", step.mlp)):
        have = sum(_present(adapter, i, kind) for i in range(adapter.num_blocks))
        if count is not None and count > have:
            raise SparsekitError(f"drop_sublayers: {count} {kind} sublayers requested but the model has {have}")
    scores, params, base = sublayer_scores(model, adapter, step, calib_ids, progress)
    if step.budget:
        total = sum(p.numel() for b in adapter.blocks for p in b.parameters())
        chosen = choose_under_budget(scores, params, int(step.budget * total))
    else:
        chosen = []
        for kind, count in (("attention", step.attention), ("mlp", step.mlp)):
            mine = {key: v for key, v in scores.items() if key[1] == kind}
            chosen += sorted(mine, key=lambda key: (mine[key], key))[: count or 0]
    removed = sum(drop_sublayer(adapter, i, kind) for i, kind in sorted(chosen))
    record = {"base_loss": base, step.score: {f"{i}:{k}": v for (i, k), v in scores.items()}}
    return StructuredResult([list(c) for c in sorted(chosen)], [], removed, record, time.perf_counter() - start)


def _width_plan(step: PruneChannels | PruneHeads, units: int) -> int:
    """How many units (channels or KV groups) a block keeps."""
    keep = units - int(round(step.ratio * units))
    if isinstance(step, PruneChannels):
        keep = min(units, -(-keep // step.round_to) * step.round_to)
    return max(1, keep)


@torch.no_grad()
def run_prune_width(model: nn.Module, adapter: Adapter, step: PruneChannels | PruneHeads,
                    calib_ids: torch.Tensor | None, *, device: torch.device | str = "cpu",
                    progress: bool = True) -> StructuredResult:
    """Apply a `prune_channels` or `prune_heads` step in place (see module docstring)."""
    start = time.perf_counter()
    heads = isinstance(step, PruneHeads)
    role = "o" if heads else "down"
    targets = step.blocks or list(range(adapter.num_blocks))
    if targets and targets[-1] >= adapter.num_blocks:
        raise SparsekitError(f"{step.NAME}: block {targets[-1]} does not exist (the model has {adapter.num_blocks})")
    if not heads and adapter.spec.experts is not None:
        raise SparsekitError("prune_channels shrinks dense MLPs; this model's MLPs are mixtures of experts")
    rel = next((r for r in adapter.spec.projections if adapter.role(r) == role), None)
    if rel is None:
        raise SparsekitError(f"{step.NAME}: the '{adapter.spec.name}' layout has no {role} projection")
    if calib_ids is None:
        raise SparsekitError(f"{step.NAME}: importance scores need calibration data (calib_ids)")
    calib = LayerwiseCalibrator(model, adapter=adapter, device=resolve_device(device), linears=[rel],
                                sequential=True, progress=progress)
    removed, kept_widths = 0, {}
    for ctx in calib.blocks(calib_ids[: step.nsamples]):
        i = ctx.index
        if i not in targets or rel not in ctx.stats:
            continue
        weight = ctx.linears()[rel].weight
        if heads:
            q_heads, kv_heads, d = attention_geometry(adapter, i)
            scores = kv_group_scores(weight, ctx.stats[rel].sum_sq, d, q_heads // kv_heads)
            keep = keep_top(scores, _width_plan(step, kv_heads))
            removed += prune_kv_groups(adapter, i, keep.cpu())
        else:
            scores = channel_scores(weight, ctx.stats[rel].sum_sq)
            keep = keep_top(scores, _width_plan(step, scores.numel()))
            removed += prune_mlp_channels(adapter, i, keep.cpu())
        kept_widths[str(i)] = int(keep.numel())
    return StructuredResult([], [], removed, {"kept": kept_widths}, time.perf_counter() - start)


@torch.no_grad()
def run_prune_experts(model: nn.Module, adapter: Adapter, step: PruneExperts, calib_ids: torch.Tensor | None, *,
                      device: torch.device | str = "cpu", progress: bool = True) -> StructuredResult:
    """Apply a `prune_experts` step in place (see module docstring)."""
    start = time.perf_counter()
    if adapter.spec.router is None:
        raise SparsekitError(f"prune_experts: the '{adapter.spec.name}' architecture has no mixture of experts")
    if calib_ids is None:
        raise SparsekitError("prune_experts: expert usage needs calibration data (calib_ids)")
    targets = step.blocks or list(range(adapter.num_blocks))
    calib = LayerwiseCalibrator(model, adapter=adapter, device=resolve_device(device), stats=False,
                                sequential=True, progress=progress)
    removed, kept, usage = 0, {}, {}
    for ctx in calib.blocks(calib_ids[: step.nsamples]):
        i = ctx.index
        router = adapter.router(i)
        if i not in targets or router is None:
            continue
        logits: list[torch.Tensor] = []
        hook = router.register_forward_hook(lambda _m, _a, out: logits.append(out[0] if isinstance(out, tuple)
                                                                              else out))
        try:
            ctx.forward()
        finally:
            hook.remove()
        top_k = int(getattr(router, "top_k", getattr(adapter.mlp(i), "top_k", 1)))
        counts, weight = expert_usage(torch.cat([l.reshape(-1, l.shape[-1]) for l in logits]), top_k)
        score = counts if step.by == "frequency" else weight
        total = score.numel()
        keep = keep_top(score, max(1, total - int(round(step.ratio * total))))
        removed += prune_experts(adapter, i, keep.cpu())
        kept[str(i)] = int(keep.numel())
        usage[str(i)] = counts.tolist()
    return StructuredResult([], [], removed, {"kept": kept, "tokens_per_expert": usage}, time.perf_counter() - start)
