"""Structural edits of a decoder stack that keep a Hugging Face model consistent (generate() included).

Removing blocks changes more than the `ModuleList`: transformers reads `config.num_hidden_layers`
(to size the KV cache and to slice the layers it runs), `config.layer_types` (sliding vs full
attention per layer: Mistral, Qwen2, Gemma 2/3) by *position*, and every attention module carries a
`layer_idx` that addresses its slot in the KV cache. All three are renumbered here so that block j
of the new model is block `kept[j]` of the old one with slot j.
"""

from __future__ import annotations

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
