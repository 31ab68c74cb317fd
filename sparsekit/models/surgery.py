"""Structural edits of a decoder stack that keep a Hugging Face model consistent (generate() included):
removing whole blocks, or one block's attention or MLP sublayer.

Removing blocks changes more than the `ModuleList`: transformers reads `config.num_hidden_layers`
(to size the KV cache and to slice the layers it runs), `config.layer_types` (sliding vs full
attention per layer: Mistral, Qwen2, Gemma 2/3) by *position*, and every attention module carries a
`layer_idx` that addresses its slot in the KV cache. All three are renumbered here so that block j
of the new model is block `kept[j]` of the old one with slot j.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn as nn

from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import Adapter


def _config(adapter: Adapter):
    """The config that describes the decoder stack (the text config of a multimodal wrapper)."""
    cfg = adapter.model.config
    text = getattr(cfg, "get_text_config", None)
    return text() if callable(text) else cfg


def drop_blocks(adapter: Adapter, indices: list[int]) -> list[int]:
    """Remove decoder blocks `indices` in place; return the kept original indices.

    The residual stream of the block before a removed span feeds the block after it.
    """
    total = adapter.num_blocks
    drop = sorted(set(int(i) for i in indices))
    if any(not 0 <= i < total for i in drop):
        raise SparsekitError(f"drop_blocks: block indices must be in [0, {total}), got {sorted(indices)}")
    if len(drop) >= total:
        raise SparsekitError(f"drop_blocks: removing {len(drop)} of {total} blocks would leave none")
    if not drop:
        return list(range(total))
    kept = [i for i in range(total) if i not in drop]
    blocks = adapter.blocks
    new = nn.ModuleList([blocks[i] for i in kept])
    parent, _, child = adapter.blocks_path.rpartition(".")
    setattr(adapter.model.get_submodule(parent) if parent else adapter.model, child, new)
    for j, block in enumerate(new):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = j
    for cfg in {id(c): c for c in (_config(adapter), adapter.model.config)}.values():
        if hasattr(cfg, "num_hidden_layers"):
            cfg.num_hidden_layers = len(kept)
        types = getattr(cfg, "layer_types", None)
        if isinstance(types, (list, tuple)) and len(types) == total:
            cfg.layer_types = [types[i] for i in kept]
    return kept


class SkippedAttention(nn.Module):
    """Stands where a removed attention sublayer was: adds nothing to the residual stream.

    The KV cache still learns the sequence length through this layer's slot (a `[batch, 1, tokens, 1]`
    stub per step, 4 bytes a token): transformers reads the cache length from a layer slot to place
    new tokens, and that slot may be this one.
    """

    skipped = True  # adapters recognise a removed sublayer by this flag

    def __init__(self, layer_idx: int | None) -> None:
        super().__init__()
        self.layer_idx = layer_idx

    def forward(self, hidden_states, *args, cache=None, past_key_values=None, **kwargs):
        cache = cache if cache is not None else past_key_values  # (the keyword changed across transformers versions)
        if cache is not None and self.layer_idx is not None:
            stub = hidden_states.new_zeros(hidden_states.shape[0], 1, hidden_states.shape[1], 1)
            cache.update(stub, stub, self.layer_idx)
        return torch.zeros_like(hidden_states), None


class SkippedMLP(nn.Module):
    """Stands where a removed MLP (or MoE) sublayer was: adds nothing to the residual stream."""

    skipped = True

    def forward(self, hidden_states, *args, **kwargs):
        return torch.zeros_like(hidden_states)


SUBLAYERS = ("attention", "mlp")


def drop_sublayer(adapter: Adapter, block: int, kind: str) -> int:
    """Remove the attention or MLP sublayer of `block` (the residual path and the other sublayer stay);
    return the number of parameters removed."""
    if kind not in SUBLAYERS:
        raise SparsekitError(f"sublayer must be one of {', '.join(SUBLAYERS)}, got {kind!r}")
    if not 0 <= block < adapter.num_blocks:
        raise SparsekitError(f"block {block} does not exist (the model has {adapter.num_blocks} blocks)")
    path = adapter.spec.attention if kind == "attention" else adapter.spec.mlp
    parent, _, child = path.rpartition(".")
    holder = adapter.blocks[block].get_submodule(parent) if parent else adapter.blocks[block]
    old = getattr(holder, child)
    if isinstance(old, (SkippedAttention, SkippedMLP)):
        raise SparsekitError(f"the {kind} of block {block} is already removed")
    params = sum(p.numel() for p in old.parameters())
    setattr(holder, child, SkippedAttention(getattr(old, "layer_idx", block)) if kind == "attention" else SkippedMLP())
    return params


def removed_sublayers(adapter: Adapter) -> list[list]:
    """[[block, 'attention' | 'mlp'], ...] of the sublayers this model has lost (for checkpoints)."""
    out = []
    for i in range(adapter.num_blocks):
        if isinstance(adapter.attention(i), SkippedAttention):
            out.append([i, "attention"])
        if isinstance(adapter.mlp(i), SkippedMLP):
            out.append([i, "mlp"])
    return out


@contextlib.contextmanager
def without_sublayer(adapter: Adapter, block: int, kind: str):
    """Temporarily remove one sublayer (to measure what the model loses without it)."""
    path = adapter.spec.attention if kind == "attention" else adapter.spec.mlp
    parent, _, child = path.rpartition(".")
    holder = adapter.blocks[block].get_submodule(parent) if parent else adapter.blocks[block]
    old = getattr(holder, child)
    drop_sublayer(adapter, block, kind)
    try:
        yield
    finally:
        setattr(holder, child, old)


def shrink_linear(linear: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A new Linear holding the selected output `rows` and input `cols` of `linear` (same dtype/device)."""
    w = linear.weight.detach()
    if rows is not None:
        w = w[rows.to(w.device)]
    if cols is not None:
        w = w[:, cols.to(w.device)]
    bias = linear.bias
    new = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, device=w.device, dtype=w.dtype)
    new.weight.data.copy_(w)
    if bias is not None:
        new.bias.data.copy_(bias.detach() if rows is None else bias.detach()[rows.to(w.device)])
    return new


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _set(block: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(block.get_submodule(parent) if parent else block, child, module)


def _by_role(adapter: Adapter, block: int) -> dict[str, tuple[str, nn.Linear]]:
    return {adapter.role(rel): (rel, lin) for rel, lin in adapter.linears(block).items()}


def add_bias(adapter: Adapter, block: int, rel: str, delta: torch.Tensor) -> None:
    """Add `delta` to the bias of projection `rel` of `block`, giving it a bias first if it has none (the
    module is replaced by a Linear with the same weight and a bias: nn.Linear adds it in forward, so
    every architecture's code picks it up; checkpoints record which projections have one)."""
    lin = adapter.linears(block)[rel]
    delta = delta.to(device=lin.weight.device, dtype=lin.weight.dtype)
    if lin.bias is None:
        new = nn.Linear(lin.in_features, lin.out_features, bias=True, device=lin.weight.device, dtype=lin.weight.dtype)
        new.weight.data.copy_(lin.weight.detach())
        new.bias.data.copy_(delta)
        _set(adapter.blocks[block], rel, new)
    else:
        lin.bias.data.add_(delta)


def _compensate(adapter: Adapter, block: int, rel: str, lin: nn.Linear, keep: torch.Tensor,
                mean: torch.Tensor | None) -> None:
    """FLAP's bias compensation: the removed input channels' expected contribution W[:, removed] E[x_removed]
    goes into the projection's bias, so its output keeps its mean."""
    if mean is None:
        return
    removed = torch.ones(lin.in_features, dtype=torch.bool)
    removed[keep] = False
    w = lin.weight.detach().float()[:, removed.to(lin.weight.device)]
    add_bias(adapter, block, rel, w @ mean.to(w.device, torch.float32)[removed.to(w.device)])


def prune_mlp_channels(adapter: Adapter, block: int, keep: torch.Tensor, mean: torch.Tensor | None = None) -> int:
    """Keep only the intermediate channels `keep` of a dense MLP (gate/up rows, down columns); return the
    parameters removed. `mean`: E[x] of down_proj's inputs over calibration tokens, for bias compensation
    (None: none)."""
    if adapter.spec.experts is not None:
        raise SparsekitError("prune_channels shrinks dense MLPs; for MoE models prune experts (prune_experts)")
    roles = _by_role(adapter, block)
    keep = torch.as_tensor(keep, dtype=torch.long).sort().values
    removed = 0
    down_rel, down = roles["down"]
    width = down.in_features
    if keep.numel() == 0 or int(keep.max()) >= width:
        raise SparsekitError(f"block {block}: keep at least one of the {width} MLP channels (indices < {width})")
    _compensate(adapter, block, down_rel, down, keep, mean)
    down_rel, down = _by_role(adapter, block)["down"]
    for role in ("gate", "up"):
        if role in roles:
            rel, lin = roles[role]
            new = shrink_linear(lin, rows=keep)
            removed += _params(lin) - _params(new)
            _set(adapter.blocks[block], rel, new)
    if "gate_up" in roles:  # fused [gate; up] rows
        rel, lin = roles["gate_up"]
        new = shrink_linear(lin, rows=torch.cat([keep, keep + width]))
        removed += _params(lin) - _params(new)
        _set(adapter.blocks[block], rel, new)
    new = shrink_linear(down, cols=keep)
    removed += _params(down) - _params(new)
    _set(adapter.blocks[block], down_rel, new)
    return removed


def _permute_rows_(linear: nn.Linear, rows: torch.Tensor, at: int = 0) -> None:
    """Reorder output rows at..at+len(rows) of `linear` in place: new row at+i = old row at+rows[i]."""
    idx = rows.to(linear.weight.device) + at
    span = slice(at, at + rows.numel())
    linear.weight.data[span] = linear.weight.data[idx]
    if linear.bias is not None:
        linear.bias.data[span] = linear.bias.data[idx]


def _permute_cols_(linear: nn.Linear, cols: torch.Tensor) -> None:
    linear.weight.data.copy_(linear.weight.data[:, cols.to(linear.weight.device)])


def permute_mlp_channels(adapter: Adapter, block: int, perm: torch.Tensor) -> None:
    """Reorder the intermediate channels of a dense MLP in place (gate/up rows and down columns by one
    permutation: new channel i = old channel perm[i]). The block computes exactly what it did: the
    activation and the gate product are elementwise per channel, and down sums over channels in any
    order. Lets an N:M mask of down_proj group its input channels freely (`sparsekit.prune.permute`)."""
    if adapter.spec.experts is not None:
        raise SparsekitError("permuting MLP channels needs a dense MLP; MoE experts are not permuted")
    roles = _by_role(adapter, block)
    perm = torch.as_tensor(perm, dtype=torch.long)
    width = roles["down"][1].in_features
    if sorted(perm.tolist()) != list(range(width)):
        raise SparsekitError(f"block {block}: an MLP channel permutation must hold each of 0..{width - 1} once")
    for role in ("gate", "up"):
        if role in roles:
            _permute_rows_(roles[role][1], perm)
    if "gate_up" in roles:  # fused [gate; up] rows
        _permute_rows_(roles["gate_up"][1], perm)
        _permute_rows_(roles["gate_up"][1], perm, at=width)
    _permute_cols_(roles["down"][1], perm)


def value_channel_order(adapter: Adapter, block: int, perms: torch.Tensor) -> torch.Tensor:
    """The order of o_proj's input channels that per-KV-head permutations `perms` ([kv_heads, head_dim])
    of the value channels imply: every query head reads the value head of its group."""
    q_heads, kv_heads, d = attention_geometry(adapter, block)
    perms = torch.as_tensor(perms, dtype=torch.long)
    if tuple(perms.shape) != (kv_heads, d) or any(sorted(p.tolist()) != list(range(d)) for p in perms):
        raise SparsekitError(f"block {block}: value permutations must be [{kv_heads}, {d}], each a permutation "
                             f"of 0..{d - 1}")
    per = q_heads // kv_heads
    return torch.cat([h * d + perms[h // per] for h in range(q_heads)])


def permute_value_channels(adapter: Adapter, block: int, perms: torch.Tensor) -> torch.Tensor:
    """Reorder the channels inside each value head in place (v_proj rows; o_proj columns of every query
    head of that KV group) by `perms[kv_head]`. Exact: attention mixes value vectors across positions,
    never across channels, and rotary embeddings touch only queries and keys. Returns o_proj's new input
    order (`value_channel_order`)."""
    q_heads, kv_heads, d = attention_geometry(adapter, block)
    order = value_channel_order(adapter, block, perms)
    roles = _by_role(adapter, block)
    kv_rows = torch.cat([h * d + torch.as_tensor(perms[h], dtype=torch.long) for h in range(kv_heads)])
    if "qkv" in roles:
        _permute_rows_(roles["qkv"][1], kv_rows, at=(q_heads + kv_heads) * d)
    else:
        _permute_rows_(roles["v"][1], kv_rows)
    _permute_cols_(roles["o"][1], order)
    return order


def attention_geometry(adapter: Adapter, block: int) -> tuple[int, int, int]:
    """(query heads, KV heads, head_dim) of a block's attention, read from its modules."""
    attn = adapter.attention(block)
    head_dim = int(getattr(attn, "head_dim"))
    roles = _by_role(adapter, block)
    q_out = roles["q"][1].out_features if "q" in roles else None
    groups = int(getattr(attn, "num_key_value_groups", 1))
    if q_out is None:  # fused qkv: q_heads * d + 2 * kv_heads * d with q_heads = groups * kv_heads
        kv = roles["qkv"][1].out_features // (head_dim * (groups + 2))
        return groups * kv, kv, head_dim
    return q_out // head_dim, q_out // head_dim // groups, head_dim


def prune_kv_groups(adapter: Adapter, block: int, keep: torch.Tensor, mean: torch.Tensor | None = None) -> int:
    """Keep only the KV groups `keep` of a block's attention: each kept KV head with all its query heads
    (so grouped-query attention stays valid); return the parameters removed. `mean`: E[x] of o_proj's
    inputs over calibration tokens, for bias compensation (None: none)."""
    q_heads, kv_heads, d = attention_geometry(adapter, block)
    per = q_heads // kv_heads
    keep = torch.as_tensor(keep, dtype=torch.long).sort().values
    if keep.numel() == 0 or int(keep.max()) >= kv_heads:
        raise SparsekitError(f"block {block}: keep at least one of the {kv_heads} KV groups (indices < {kv_heads})")
    kv_rows = (keep[:, None] * d + torch.arange(d)).reshape(-1)
    q_rows = ((keep[:, None] * per + torch.arange(per))[..., None] * d + torch.arange(d)).reshape(-1)
    roles = _by_role(adapter, block)
    _compensate(adapter, block, roles["o"][0], roles["o"][1], q_rows, mean)
    roles = _by_role(adapter, block)
    removed = 0
    plan = {"q": q_rows, "k": kv_rows, "v": kv_rows}
    if "qkv" in roles:
        plan = {"qkv": torch.cat([q_rows, q_heads * d + kv_rows, (q_heads + kv_heads) * d + kv_rows])}
    for role, rows in plan.items():
        rel, lin = roles[role]
        new = shrink_linear(lin, rows=rows)
        removed += _params(lin) - _params(new)
        _set(adapter.blocks[block], rel, new)
    rel, lin = roles["o"]
    new = shrink_linear(lin, cols=q_rows)
    removed += _params(lin) - _params(new)
    _set(adapter.blocks[block], rel, new)
    sync_attention(adapter, block)
    return removed


def sync_attention(adapter: Adapter, block: int) -> None:
    """Make a block's attention module agree with its (possibly shrunk) projections: head counts on the
    module, and a private copy of the config where the implementation reads them from there (Phi-3
    slices its fused qkv output by `config.num_attention_heads`)."""
    q_heads, kv_heads, _ = attention_geometry(adapter, block)
    attn = adapter.attention(block)
    for attr, value in (("num_heads", q_heads), ("num_key_value_heads", kv_heads)):
        if hasattr(attn, attr):
            setattr(attn, attr, value)
    cfg = getattr(attn, "config", None)
    if cfg is not None and getattr(cfg, "num_attention_heads", q_heads) != q_heads:
        cfg = copy.copy(cfg)
        cfg.num_attention_heads, cfg.num_key_value_heads = q_heads, kv_heads
        attn.config = cfg


def projection_shapes(adapter: Adapter) -> dict[str, list[int]]:
    """[out, in] of every projection (width pruning makes them differ from the config's)."""
    return {f"{adapter.blocks_path}.{i}.{rel}": [int(lin.out_features), int(lin.in_features)]
            for i in range(adapter.num_blocks) for rel, lin in adapter.linears(i).items()}


def projection_biases(adapter: Adapter) -> list[str]:
    """Names of the projections that have a bias (bias compensation may add one; for checkpoints)."""
    return [f"{adapter.blocks_path}.{i}.{rel}" for i in range(adapter.num_blocks)
            for rel, lin in adapter.linears(i).items() if lin.bias is not None]


def apply_shapes(adapter: Adapter, shapes: dict[str, list[int]], biases: list[str] | None = None) -> None:
    """Replace projections whose recorded shape (or, when `biases` is given, bias presence) differs by
    empty Linears of that shape (before loading a state dict into them)."""
    with_bias = None if biases is None else set(biases)
    for i in range(adapter.num_blocks):
        for rel, lin in adapter.linears(i).items():
            name = f"{adapter.blocks_path}.{i}.{rel}"
            want = shapes.get(name) or [lin.out_features, lin.in_features]
            bias = lin.bias is not None if with_bias is None else name in with_bias
            if [lin.out_features, lin.in_features] != list(want) or bias != (lin.bias is not None):
                new = nn.Linear(want[1], want[0], bias=bias, device=lin.weight.device, dtype=lin.weight.dtype)
                _set(adapter.blocks[i], rel, new)
        if not isinstance(adapter.attention(i), SkippedAttention):
            sync_attention(adapter, i)


def untie_weight(model: nn.Module, name: str) -> list[str]:
    """Give module `name` its own copy of a weight it shares with other modules (the tied input and output
    embeddings of most small LMs), so that compressing it in place leaves them exact; returns the names of
    the modules it shared with ([] when it shared with none, and nothing changes).

    Untying the output embedding clears `tie_word_embeddings` in the config (and in its text config), so
    that transformers' `tie_weights()` (which `checkpoint.load` calls) and a saved config keep them apart.
    The copy costs its storage: the input embedding is only gathered from (one row a token), the output
    embedding is streamed whole every token, so it is the one worth compressing.
    """
    module = model.get_submodule(name)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, nn.Parameter):
        return []
    sharers = [n for n, m in model.named_modules() if n != name and getattr(m, "weight", None) is weight]
    if not sharers:
        return []
    module.weight = nn.Parameter(weight.detach().clone(), requires_grad=weight.requires_grad)
    get_out = getattr(model, "get_output_embeddings", None)
    if callable(get_out) and get_out() is module:
        cfg = getattr(model, "config", None)
        text = getattr(cfg, "get_text_config", None)
        for c in {id(c): c for c in (cfg, text() if callable(text) else None) if c is not None}.values():
            if getattr(c, "tie_word_embeddings", False):
                c.tie_word_embeddings = False
    return sharers


def num_experts(adapter: Adapter, block: int) -> int:
    return int(adapter.router(block).weight.shape[0])


def prune_experts(adapter: Adapter, block: int, keep: torch.Tensor) -> int:
    """Keep only experts `keep` of a block's MoE: router rows and fused expert tensors shrink, and the
    top-k of the router is capped at the experts left; return the parameters removed."""
    router, experts = adapter.router(block), adapter.experts(block)
    if router is None or experts is None:
        raise SparsekitError(f"block {block} has no mixture of experts to prune")
    total = num_experts(adapter, block)
    keep = torch.as_tensor(keep, dtype=torch.long).sort().values
    if keep.numel() == 0 or int(keep.max()) >= total:
        raise SparsekitError(f"block {block}: keep at least one of the {total} experts (indices < {total})")
    before = _params(router) + _params(experts)
    for module in (router, experts):
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dim() >= 2 and param.shape[0] == total:  # one slice per expert along dim 0
                setattr(module, name, nn.Parameter(param.detach()[keep.to(param.device)].clone(),
                                                   requires_grad=param.requires_grad))
    left = int(keep.numel())
    for module in (router, experts, adapter.mlp(block)):
        if hasattr(module, "num_experts"):
            module.num_experts = left
        if hasattr(module, "top_k"):
            module.top_k = min(int(module.top_k), left)
    return before - _params(router) - _params(experts)


def moe_structure(adapter: Adapter) -> dict[str, int]:
    """Experts kept per MoE block (checkpoints restore these counts before loading)."""
    if adapter.spec.router is None:
        return {}
    return {str(i): num_experts(adapter, i) for i in range(adapter.num_blocks)
            if adapter.router(i) is not None and not isinstance(adapter.mlp(i), SkippedMLP)}


def drop_stack_blocks(model: nn.Module, path: str, indices: list[int]) -> tuple[list[int], int]:
    """Remove blocks `indices` of any stack of blocks (an `nn.ModuleList` at `path`, e.g. a vision tower's
    encoder layers); the config the stack's owner holds gets the new layer count. Returns (kept, params removed)."""
    try:
        stack = model.get_submodule(path)
    except AttributeError:
        stack = None
    if not isinstance(stack, nn.ModuleList):
        raise SparsekitError(f"drop_blocks: {path!r} is not a ModuleList of blocks in this model")
    total = len(stack)
    drop = sorted(set(int(i) for i in indices))
    if any(not 0 <= i < total for i in drop) or len(drop) >= total:
        raise SparsekitError(f"drop_blocks: cannot remove blocks {drop} of the {total} in {path}")
    kept = [i for i in range(total) if i not in drop]
    params = sum(p.numel() for i in drop for p in stack[i].parameters())
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, nn.ModuleList([stack[i] for i in kept]))
    cfg = getattr(parent, "config", None)
    if cfg is not None and getattr(cfg, "num_hidden_layers", None) == total:
        cfg.num_hidden_layers = len(kept)
    return kept, params
