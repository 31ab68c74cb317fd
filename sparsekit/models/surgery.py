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
