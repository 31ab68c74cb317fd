"""`structured_search`: one budgeted search over heads, MLP channels and whole sublayers of every block.

Each round measures the model as it is now, on the first `nsamples` calibration windows (one pass of
the layer-wise calibrator, no sequential update), and scores every candidate by the energy it adds to
the residual stream, relative to the energy of the block's output (what the next blocks read):

- an MLP channel j:  ||W_down[:, j]||^2 * Var(x_j) / E||h||^2   (E[x_j^2] without bias compensation:
  with it, the channel's mean contribution moves into down_proj's bias, so only its fluctuation is
  lost: FLAP's fluctuation metric);
- a KV group (its KV head and every query head reading it): the same sum over its o_proj input channels;
- a whole attention or MLP sublayer: E||sublayer output||^2 / E||h||^2, measured with hooks (the
  sublayer's actual contribution, cross-channel correlations included). With Gemma-2's sandwich norms
  the sublayer's output is what its post-norm hands to the residual stream, and the channel / group
  terms (measured before that norm) are scaled by the norm's average gain on that sublayer's energy
  (an approximation; the fisher score linearises through the norm exactly).

With `score: fisher` the same candidates are scored instead by the loss they are expected to cost,
1/2 sum_t (g_t . d_t)^2 with g_t the loss gradient at the output the removal perturbs by d_t (`fisher`):
the energy score normalises by each block's own output and cannot see that the same error hurts more in
one block than another; the gradients carry what every later block does with it.

Channels move in chunks of `channel_group` (the lowest-scored first within a block); a block keeps at
least one KV group and one chunk unless its whole sublayer is the candidate chosen. Candidates are
taken in increasing score per unit of cost until the round's share of the budget is spent (rounds
spend 1/rounds of it each), then the model is shrunk (`sparsekit.models.surgery`, bias compensation
included) and the next round re-measures what the shrunk model computes: removals interact, and a
sum of single-removal scores misses that.

Cost is either parameters (exact: the budget is never exceeded and is missed by less than the smallest
candidate's cost) or decode time from a cost model profiled on the real model on this device: the
1-token forward time of the model as it is, with every MLP at half width, with every attention at
one KV group, and without every MLP / attention, gives per block a fixed and a per-unit time for
each sublayer (`profile_costs`). The speedup reached is measured after the search and recorded.
"""

from __future__ import annotations

import copy
import functools
import math
import statistics
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from sparsekit.calib.engine import LayerwiseCalibrator, module_device
from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import Adapter
from sparsekit.models.surgery import (SkippedAttention, SkippedMLP, attention_geometry, drop_sublayer, prune_kv_groups,
                                      prune_mlp_channels)
from sparsekit.recipe import StructuredSearch
from sparsekit.utils.training import only_trainable


@dataclass
class Candidate:
    block: int
    kind: str                 # 'channels' | 'heads' | 'attention' | 'mlp'
    units: list[int]          # channel / KV-group indices (empty for a whole sublayer)
    score: float
    cost: float


@dataclass
class SearchResult:
    params_before: int
    params_removed: int
    widths: dict[str, dict[str, int]] = field(default_factory=dict)   # block -> {kv_groups, channels} (0: removed)
    rounds: list[dict] = field(default_factory=list)
    speedup: dict | None = None
    seconds: float = 0.0


def _block_params(adapter: Adapter) -> int:
    return sum(p.numel() for b in adapter.blocks for p in b.parameters())


def _role_rel(adapter: Adapter, block: int, role: str) -> str | None:
    return next((rel for rel in adapter.linears(block) if adapter.role(rel) == role), None)


@dataclass
class _Measure:
    """One block's measurement: per-channel and per-KV-group scores, sublayer scores, input means."""

    channels: torch.Tensor | None = None
    groups: torch.Tensor | None = None
    attention: float | None = None
    mlp: float | None = None
    mlp_mean: torch.Tensor | None = None
    o_mean: torch.Tensor | None = None


@torch.no_grad()
def measure(model: nn.Module, adapter: Adapter, ids: torch.Tensor, device: torch.device, compensate: bool,
            progress: bool = False) -> dict[int, _Measure]:
    """Score every candidate of every block on the model as it is now (see module docstring)."""
    rels = sorted({rel for i in range(adapter.num_blocks) for rel in adapter.linears(i)
                   if adapter.role(rel) in ("o", "down")})
    calib = LayerwiseCalibrator(model, adapter=adapter, device=device, linears=rels, sequential=False,
                                progress=progress)
    out: dict[int, _Measure] = {}
    for ctx in calib.blocks(ids):
        i, m = ctx.index, _Measure()
        # energy[kind]: what the sublayer adds to the residual stream; own[kind]: its own output, where that
        # differs (Gemma-2's sandwich norm after it), to carry the channel / group terms measured before the
        # norm over to what the residual receives
        energy, own = {"attention": 0.0, "mlp": 0.0}, {}
        hooks = []
        added = _residual_terms(adapter, i)
        for kind, module in (("attention", adapter.attention(i)), ("mlp", adapter.mlp(i))):
            if isinstance(module, (SkippedAttention, SkippedMLP)):
                continue

            def hook(_m, _a, output, into=energy, kind=kind):
                y = output[0] if isinstance(output, tuple) else output
                into[kind] = into.get(kind, 0.0) + float(y.float().pow(2).sum())
            hooks.append(added[kind].register_forward_hook(hook))
            if added[kind] is not module:
                hooks.append(module.register_forward_hook(functools.partial(hook, into=own, kind=kind)))
        try:
            outputs = ctx.forward()
        finally:
            for h in hooks:
                h.remove()
        total = sum(float(y.float().pow(2).sum()) for y in outputs)
        linears = ctx.linears()
        down_rel, o_rel = _role_rel(adapter, i, "down"), _role_rel(adapter, i, "o")
        if not isinstance(adapter.mlp(i), SkippedMLP):
            m.mlp = energy["mlp"] / total
        if not isinstance(adapter.attention(i), SkippedAttention):
            m.attention = energy["attention"] / total
        # a norm after the sublayer rescales its output (per token by 1/rms, per dimension by its weight): the
        # channel / group terms take that norm's average gain on this sublayer's energy, residual over own (1
        # without such a norm). An approximation: it ignores how the gain varies over tokens and dimensions,
        # and that the norm removes the part of a change along the output; it puts them on the scale of the
        # whole-sublayer term, which the pre-norm energies missed by orders of magnitude
        gain = {kind: energy[kind] / max(own[kind], 1e-30) if kind in own else 1.0 for kind in ("attention", "mlp")}
        if down_rel in ctx.stats and adapter.spec.experts is None:
            st = ctx.stats[down_rel]
            spread = st.var() if compensate else st.mean_sq()
            m.channels = linears[down_rel].weight.float().pow(2).sum(0) * spread * st.count * gain["mlp"] / total
            m.mlp_mean = st.mean()
        if o_rel in ctx.stats:
            st = ctx.stats[o_rel]
            spread = st.var() if compensate else st.mean_sq()
            per_col = linears[o_rel].weight.float().pow(2).sum(0) * spread * st.count * gain["attention"] / total
            q_heads, kv_heads, d = attention_geometry(adapter, i)
            m.groups = per_col.reshape(kv_heads, (q_heads // kv_heads) * d).sum(1)
            m.o_mean = st.mean()
        out[i] = m
    return out


def _residual_terms(adapter: Adapter, i: int) -> dict[str, nn.Module]:
    """The modules whose outputs block i adds to the residual stream: the sublayers themselves, or with
    Gemma-2-style sandwich norms the norms after them. Linearising at a sublayer's own output there would
    see nothing: RMSNorm is scale-invariant, so its gradient is orthogonal to its input."""
    norms = adapter.norms(i)
    if norms.get("post_feedforward_layernorm") is not None:
        return {"attention": norms["post_attention_layernorm"], "mlp": norms["post_feedforward_layernorm"]}
    return {"attention": adapter.attention(i), "mlp": adapter.mlp(i)}


def fisher(model: nn.Module, adapter: Adapter, ids: torch.Tensor, device: torch.device, scores: dict[int, _Measure],
           compensate: bool, batch_size: int = 4) -> None:
    """Replace the energy scores of `scores` by the loss each removal is expected to cost (in place).

    Removing a candidate adds a perturbation d_t to some module's output at every token t; to second order,
    with the empirical Fisher for the Hessian, the language-model loss grows by 1/2 sum_t (g_t . d_t)^2, g_t
    the loss gradient at that output (Optimal Brain Damage on activations; LLM-Pruner's second-order Taylor
    term). Unlike the energy relative to the block's output, this sees what the blocks *after* the removal
    do with it, so scores of different blocks compare. With a_t = g_t W (the gradient at the module's
    inputs): an MLP channel j costs sum_t (a_tj (x_tj - mu_j))^2 (x_tj without bias compensation, which
    otherwise keeps the mean mu_j); a KV group the same with the sum over its o_proj inputs inside the
    square; a whole sublayer sum_t (g_t . y_t)^2 with y_t what it adds to the residual stream. One forward
    and backward of the whole model on the windows (weights frozen); `scores` supplies the means (`measure`
    ran first)."""
    home = module_device(model)
    model.to(device)
    acc: dict[tuple[int, str], torch.Tensor] = {}
    hooks = []

    def add(key: tuple[int, str], value: torch.Tensor) -> None:
        acc[key] = acc[key] + value if key in acc else value

    def projection(i: int, kind: str, weight: torch.Tensor, mean: torch.Tensor | None, groups: int | None):
        def forward(_m, args, out):
            x = args[0].detach().float()
            if compensate and mean is not None:
                x = x - mean.to(x.device)

            def backward(g):
                a = (g.float() @ weight.float()) * x          # (batch, tokens, inputs): g . (W[:, j] x_j)
                if groups is not None:
                    a = a.reshape(*a.shape[:-1], groups, -1).sum(-1)
                add((i, kind), a.pow(2).flatten(0, -2).sum(0))
            if out.requires_grad:
                out.register_hook(backward)
        return forward

    def sublayer(i: int, kind: str):
        def forward(_m, _args, out):
            y = (out[0] if isinstance(out, tuple) else out)
            if not y.requires_grad:
                return
            kept = y.detach().float()
            y.register_hook(lambda g: add((i, kind), (g.float() * kept).sum(-1).pow(2).sum().reshape(1)))
        return forward

    for i, m in scores.items():
        linears = adapter.linears(i)
        added = _residual_terms(adapter, i)
        if m.channels is not None:
            down = linears[_role_rel(adapter, i, "down")]
            hooks.append(down.register_forward_hook(projection(i, "channels", down.weight, m.mlp_mean, None)))
        if m.groups is not None:
            o = linears[_role_rel(adapter, i, "o")]
            hooks.append(o.register_forward_hook(projection(i, "groups", o.weight, m.o_mean, m.groups.numel())))
        for kind in ("mlp", "attention"):
            if getattr(m, kind) is not None:
                hooks.append(added[kind].register_forward_hook(sublayer(i, kind)))
    # the weights stay frozen: only the activations need gradients, from the embeddings' output on
    hooks.append(adapter.embed_tokens.register_forward_hook(lambda _m, _a, out: out.detach().requires_grad_()))
    try:
        with only_trainable(model), torch.enable_grad():
            for batch in ids.split(batch_size):
                batch = batch.to(device)
                model(input_ids=batch, labels=batch, use_cache=False).loss.mul(batch.numel()).backward()
    finally:
        for h in hooks:
            h.remove()
        model.to(home)
    for i, m in scores.items():
        m.channels = acc[(i, "channels")].to(m.channels.device) / 2 if m.channels is not None else None
        m.groups = acc[(i, "groups")].to(m.groups.device) / 2 if m.groups is not None else None
        m.mlp = float(acc[(i, "mlp")]) / 2 if m.mlp is not None else None
        m.attention = float(acc[(i, "attention")]) / 2 if m.attention is not None else None


# -- costs --------------------------------------------------------------------------------------------
@dataclass
class CostModel:
    """Cost of removing things from block i: parameters, or seconds of a 1-token forward."""

    unit: str                           # 'params' | 'seconds'
    mlp_fixed: float = 0.0              # seconds: a block's MLP beyond its per-channel cost
    mlp_per_channel: float = 0.0
    attn_fixed: float = 0.0
    attn_per_group: float = 0.0
    total: float = 0.0                  # seconds: the 1-token forward of the model as profiled


def _rows_params(lin: nn.Module, rows: int) -> int:
    return rows * (lin.in_features + (lin.bias is not None))


def _param_cost(adapter: Adapter, i: int, kind: str, units: int) -> float:
    """Parameters that removing `units` channels / KV groups (or a whole sublayer) takes away, biases
    included (a bias that compensation adds is not subtracted: the count never falls short)."""
    if kind in ("attention", "mlp"):
        module = adapter.attention(i) if kind == "attention" else adapter.mlp(i)
        return float(sum(p.numel() for p in module.parameters()))
    roles = {adapter.role(rel): lin for rel, lin in adapter.linears(i).items()}
    if kind == "channels":
        rows = sum(_rows_params(roles[r], units) for r in ("gate", "up") if r in roles)
        rows += _rows_params(roles["gate_up"], 2 * units) if "gate_up" in roles else 0
        return float(rows + units * roles["down"].out_features)
    q_heads, kv_heads, d = attention_geometry(adapter, i)
    per = q_heads // kv_heads
    if "qkv" in roles:
        rows = _rows_params(roles["qkv"], units * (per + 2) * d)
    else:
        rows = sum(_rows_params(roles[r], units * n * d) for r, n in (("q", per), ("k", 1), ("v", 1)))
    return float(rows + units * per * d * roles["o"].out_features)


def _time_forward(model: nn.Module, ids: torch.Tensor, reps: int) -> float:
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            model(input_ids=ids, use_cache=False)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def profile_costs(model: nn.Module, adapter: Adapter, reps: int = 30) -> CostModel:
    """Time the 1-token forward of copies of the model (as is; every MLP at half width; every attention at
    one KV group; every MLP removed; every attention removed) and solve for per-block sublayer costs."""
    from sparsekit.models.adapters import get_adapter

    ids = torch.tensor([[1]], device=module_device(model))
    base = _time_forward(model, ids, reps)
    blocks = list(range(adapter.num_blocks))

    def variant(edit) -> float:
        twin = copy.deepcopy(model)
        a = get_adapter(twin)
        for i in blocks:
            edit(a, i)
        t = _time_forward(twin, ids, reps)
        del twin
        return t

    widths = [adapter.linears(i)[_role_rel(adapter, i, "down")].in_features for i in blocks
              if not isinstance(adapter.mlp(i), SkippedMLP)]
    groups = [attention_geometry(adapter, i)[1] for i in blocks if not isinstance(adapter.attention(i), SkippedAttention)]
    cost = CostModel("seconds", total=base)
    if widths:
        no_mlp = variant(lambda a, i: None if isinstance(a.mlp(i), SkippedMLP) else drop_sublayer(a, i, "mlp"))
        half = variant(lambda a, i: None if isinstance(a.mlp(i), SkippedMLP) else prune_mlp_channels(
            a, i, torch.arange(a.linears(i)[_role_rel(a, i, "down")].in_features // 2)))
        w = statistics.fmean(widths)
        per_channel = max(0.0, (base - half) / (len(widths) * w / 2))
        cost.mlp_per_channel = per_channel
        cost.mlp_fixed = max(0.0, (base - no_mlp) / len(widths) - per_channel * w)
    if groups:
        no_attn = variant(lambda a, i: None if isinstance(a.attention(i), SkippedAttention) else drop_sublayer(
            a, i, "attention"))
        g = statistics.fmean(groups)
        if g > 1:
            one = variant(lambda a, i: None if isinstance(a.attention(i), SkippedAttention) else prune_kv_groups(
                a, i, torch.arange(1)))
            cost.attn_per_group = max(0.0, (base - one) / (len(groups) * (g - 1)))
        cost.attn_fixed = max(0.0, (base - no_attn) / len(groups) - cost.attn_per_group * g)
    return cost


def _cost(cost: CostModel | None, adapter: Adapter, i: int, kind: str, units: int) -> float:
    if cost is None:
        return _param_cost(adapter, i, kind, units)
    if kind == "channels":
        return units * cost.mlp_per_channel
    if kind == "heads":
        return units * cost.attn_per_group
    if kind == "mlp":
        w = adapter.linears(i)[_role_rel(adapter, i, "down")].in_features
        return cost.mlp_fixed + w * cost.mlp_per_channel
    g = attention_geometry(adapter, i)[1]
    return cost.attn_fixed + g * cost.attn_per_group


# -- choice -------------------------------------------------------------------------------------------
def candidates(adapter: Adapter, scores: dict[int, _Measure], step: StructuredSearch, cost: CostModel | None
               ) -> list[Candidate]:
    """Every removable thing of every block with its score and cost."""
    out: list[Candidate] = []
    for i, m in scores.items():
        if m.channels is not None and "channels" in step.candidates:
            order = m.channels.argsort().tolist()
            chunks = [order[k:k + step.channel_group] for k in range(0, len(order), step.channel_group)]
            for chunk in chunks[:-1]:  # the last chunk stays: emptying the MLP is the 'mlp' candidate
                out.append(Candidate(i, "channels", sorted(chunk), float(m.channels[chunk].sum()),
                                     _cost(cost, adapter, i, "channels", len(chunk))))
        if m.groups is not None and "heads" in step.candidates and m.groups.numel() > 1:
            for g in m.groups.argsort().tolist()[:-1]:
                out.append(Candidate(i, "heads", [g], float(m.groups[g]), _cost(cost, adapter, i, "heads", 1)))
        if "sublayers" in step.candidates:
            if m.mlp is not None:
                out.append(Candidate(i, "mlp", [], m.mlp, _cost(cost, adapter, i, "mlp", 0)))
            if m.attention is not None:
                out.append(Candidate(i, "attention", [], m.attention, _cost(cost, adapter, i, "attention", 0)))
    return out


def choose(cands: list[Candidate], allowance: float) -> list[Candidate]:
    """Greedy by score per cost: take what fits in `allowance`; a sublayer and its own units exclude each
    other within a round (the other's score is stale once one is taken)."""
    chosen: list[Candidate] = []
    spent = 0.0
    taken_units: set[tuple[int, str]] = set()
    taken_whole: set[tuple[int, str]] = set()
    sub_of = {"channels": "mlp", "heads": "attention", "mlp": "mlp", "attention": "attention"}
    for c in sorted(cands, key=lambda c: (c.score / c.cost if c.cost > 0 else math.inf, c.block)):
        if c.cost <= 0 or spent + c.cost > allowance:
            continue
        key = (c.block, sub_of[c.kind])
        if key in taken_whole or (c.kind in ("mlp", "attention") and key in taken_units):
            continue
        chosen.append(c)
        spent += c.cost
        (taken_whole if c.kind in ("mlp", "attention") else taken_units).add(key)
    return chosen


def apply(adapter: Adapter, chosen: list[Candidate], scores: dict[int, _Measure], compensate: bool) -> None:
    """Shrink the model: per block, the chosen channel chunks and KV groups, or whole sublayers."""
    by_block: dict[int, list[Candidate]] = {}
    for c in chosen:
        by_block.setdefault(c.block, []).append(c)
    for i, cs in by_block.items():
        m = scores[i]
        kinds = {c.kind for c in cs}
        if "mlp" in kinds:
            drop_sublayer(adapter, i, "mlp")
        elif "channels" in kinds:
            width = adapter.linears(i)[_role_rel(adapter, i, "down")].in_features
            gone = {u for c in cs if c.kind == "channels" for u in c.units}
            keep = torch.tensor([j for j in range(width) if j not in gone])
            prune_mlp_channels(adapter, i, keep, m.mlp_mean if compensate else None)
        if "attention" in kinds:
            drop_sublayer(adapter, i, "attention")
        elif "heads" in kinds:
            kv = attention_geometry(adapter, i)[1]
            gone = {u for c in cs if c.kind == "heads" for u in c.units}
            keep = torch.tensor([g for g in range(kv) if g not in gone])
            prune_kv_groups(adapter, i, keep, m.o_mean if compensate else None)


def widths(adapter: Adapter) -> dict[str, dict[str, int | None]]:
    """Per block: KV groups and MLP channels kept (0: the sublayer was removed; channels None: an MoE MLP,
    whose experts this search does not shrink)."""
    out = {}
    for i in range(adapter.num_blocks):
        attn = 0 if isinstance(adapter.attention(i), SkippedAttention) else attention_geometry(adapter, i)[1]
        if isinstance(adapter.mlp(i), SkippedMLP):
            mlp = 0
        elif adapter.spec.experts is not None:
            mlp = None
        else:
            mlp = adapter.linears(i)[_role_rel(adapter, i, "down")].in_features
        out[str(i)] = {"kv_groups": attn, "channels": mlp}
    return out


def run_structured_search(model: nn.Module, adapter: Adapter, step: StructuredSearch, calib_ids: torch.Tensor | None,
                          *, device: torch.device | str = "cpu", progress: bool = True) -> SearchResult:
    """Apply a `structured_search` step in place (see module docstring)."""
    from sparsekit.utils.device import resolve_device

    start = time.perf_counter()
    if calib_ids is None:
        raise SparsekitError("structured_search: importance is measured on calibration data (calib_ids)")
    if adapter.spec.experts is not None and "channels" in step.candidates:
        raise SparsekitError("structured_search: the MLPs of this model are mixtures of experts, whose channels "
                             "it cannot shrink; use candidates: [heads, sublayers], or prune_experts for experts")
    device = resolve_device(device)
    ids = calib_ids[: step.nsamples]
    params_before = _block_params(adapter)
    cost = None
    if step.speedup is not None:
        cost = profile_costs(model, adapter)
        target = cost.total * (1 - 1 / step.speedup)
    else:
        of = params_before if step.budget_of == "blocks" else sum(p.numel() for p in model.parameters())
        target = step.budget * of
        if target >= params_before:
            raise SparsekitError(f"structured_search: a budget of {step.budget} of the model's {of:,} parameters "
                                 f"is {target:,.0f}, not less than all {params_before:,} the decoder blocks hold")
    result = SearchResult(params_before, 0)
    spent = 0.0  # parameters actually removed (budget) or seconds the cost model expects saved (speedup)
    bar = tqdm(range(step.rounds), desc="structured search", unit="round", disable=not progress)
    for r in bar:
        scores = measure(model, adapter, ids, device, step.bias_compensation)
        if step.score == "fisher":
            fisher(model, adapter, ids, device, scores, step.bias_compensation)
        chosen = choose(candidates(adapter, scores, step, cost), target * (r + 1) / step.rounds - spent)
        before = _block_params(adapter)
        apply(adapter, chosen, scores, step.bias_compensation)
        removed = before - _block_params(adapter)
        spent += removed if cost is None else sum(c.cost for c in chosen)
        result.rounds.append({"removed": [[c.block, c.kind, len(c.units)] for c in chosen],
                              "params_removed": removed})
    result.params_removed = params_before - _block_params(adapter)
    result.widths = widths(adapter)
    if cost is not None:
        after = _time_forward(model, torch.tensor([[1]], device=module_device(model)), 30)
        result.speedup = {"target": step.speedup, "predicted": cost.total / max(cost.total - spent, 1e-12),
                          "measured": cost.total / after, "seconds_before": cost.total, "seconds_after": after}
    result.seconds = time.perf_counter() - start
    return result
