"""Architecture adapters: where the blocks, attention, MLP, norms, router and experts of a model live.

The rest of sparsekit never spells a model's attribute names. It asks an `Adapter`, which binds one
`ArchSpec` (a table of dotted paths) to a loaded model. A new architecture is one `ArchSpec` entry
in `ARCHITECTURES` (or `register_architecture()` at run time), never a copy of library code.

Paths: top-level paths (`blocks`, `embed_tokens`, ...) are relative to the `*ForCausalLM` module;
per-block paths (`attention`, `projections`, ...) are relative to one decoder block. A path may be
a tuple of alternatives tried in order, so one spec covers e.g. a text model and the same text
model nested inside a multimodal wrapper (`model.language_model.layers`).

Projection roles name what a Linear does, so that per-module ratios (attention vs MLP,
q/k/v/o/gate/up/down) work the same on every architecture: fused projections keep a fused role
(`qkv`, `gate_up`) so a method can split them along the output dimension when it needs to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping

import torch.nn as nn

from sparsekit.errors import UnsupportedArchitectureError

log = logging.getLogger(__name__)

PathLike = str | tuple[str, ...]

#: Which sublayer each projection role belongs to.
ROLE_GROUP: dict[str, str] = {
    "q": "attention", "k": "attention", "v": "attention", "qkv": "attention", "o": "attention",
    "gate": "mlp", "up": "mlp", "gate_up": "mlp", "down": "mlp",
}

_TEXT_ROOTS = ("model", "model.language_model")


def _alts(suffix: str) -> tuple[str, ...]:
    """The same module under a text model or under a multimodal wrapper's language model."""
    return tuple(f"{root}.{suffix}" for root in _TEXT_ROOTS)


_LLAMA_PROJ = {
    "self_attn.q_proj": "q", "self_attn.k_proj": "k", "self_attn.v_proj": "v", "self_attn.o_proj": "o",
    "mlp.gate_proj": "gate", "mlp.up_proj": "up", "mlp.down_proj": "down",
}
_ATTN_PROJ = {k: v for k, v in _LLAMA_PROJ.items() if k.startswith("self_attn.")}
_LLAMA_NORMS = ("input_layernorm", "post_attention_layernorm")
_GEMMA2_NORMS = _LLAMA_NORMS + ("pre_feedforward_layernorm", "post_feedforward_layernorm")


@dataclass(frozen=True)
class ArchSpec:
    """Where the parts of a decoder-only causal LM live. See the module docstring for path rules."""

    name: str
    projections: Mapping[str, str] = field(default_factory=lambda: dict(_LLAMA_PROJ))
    norms: tuple[str, ...] = _LLAMA_NORMS
    blocks: PathLike = _alts("layers")
    embed_tokens: PathLike = _alts("embed_tokens")
    final_norm: PathLike = _alts("norm")
    lm_head: PathLike = "lm_head"
    attention: str = "self_attn"
    mlp: str = "mlp"
    router: str | None = None
    experts: str | None = None
    shared_expert: str | None = None

    def __post_init__(self) -> None:
        bad = {r for r in self.projections.values() if r not in ROLE_GROUP}
        if bad:
            raise ValueError(f"ArchSpec {self.name!r}: unknown projection roles {sorted(bad)}; "
                             f"known roles are {sorted(ROLE_GROUP)}")


_MOE_SHARED = {"mlp.shared_expert.gate_proj": "gate", "mlp.shared_expert.up_proj": "up",
               "mlp.shared_expert.down_proj": "down"}

#: model_type -> spec. Dense Llama-family models share the default paths.
ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": ArchSpec("llama"),
    "mistral": ArchSpec("mistral"),
    "qwen2": ArchSpec("qwen2"),
    "qwen3": ArchSpec("qwen3"),
    "gemma": ArchSpec("gemma"),
    "gemma2": ArchSpec("gemma2", norms=_GEMMA2_NORMS),
    "gemma3_text": ArchSpec("gemma3_text", norms=_GEMMA2_NORMS),
    "gemma3": ArchSpec("gemma3", norms=_GEMMA2_NORMS),
    "phi3": ArchSpec("phi3", projections={"self_attn.qkv_proj": "qkv", "self_attn.o_proj": "o",
                                          "mlp.gate_up_proj": "gate_up", "mlp.down_proj": "down"}),
    "mixtral": ArchSpec("mixtral", projections=dict(_ATTN_PROJ), router="mlp.gate", experts="mlp.experts"),
    "qwen2_moe": ArchSpec("qwen2_moe", projections={**_ATTN_PROJ, **_MOE_SHARED}, router="mlp.gate",
                          experts="mlp.experts", shared_expert="mlp.shared_expert"),
    "qwen3_moe": ArchSpec("qwen3_moe", projections=dict(_ATTN_PROJ), router="mlp.gate", experts="mlp.experts"),
}


def register_architecture(model_type: str, spec: ArchSpec, *, overwrite: bool = False) -> None:
    """Teach sparsekit a new architecture (keyed by `config.model_type`)."""
    if model_type in ARCHITECTURES and not overwrite:
        raise ValueError(f"architecture {model_type!r} is already registered; pass overwrite=True to replace it")
    ARCHITECTURES[model_type] = spec


def _get(root: nn.Module, path: PathLike) -> nn.Module | None:
    """Resolve a dotted path (or the first resolvable alternative) below `root`, else None."""
    for candidate in (path,) if isinstance(path, str) else path:
        mod: nn.Module | None = root
        for part in candidate.split("."):
            mod = getattr(mod, part, None)
            if mod is None:
                break
        if mod is not None:
            return mod
    return None


def _first(path: PathLike) -> str:
    return path if isinstance(path, str) else path[0]


class Adapter:
    """One `ArchSpec` bound to one model. Construction validates every path on block 0."""

    def __init__(self, model: nn.Module, spec: ArchSpec):
        self.model = model
        self.spec = spec
        missing = self._missing()
        if missing:
            raise UnsupportedArchitectureError(
                f"{type(model).__name__} does not match the '{spec.name}' layout: missing {', '.join(missing)}; "
                "register a matching ArchSpec with sparsekit.models.register_architecture()")
        self._blocks_path = next(p for p in ((spec.blocks,) if isinstance(spec.blocks, str) else spec.blocks)
                                 if _get(model, p) is not None)

    def _missing(self) -> list[str]:
        spec = self.spec
        blocks = _get(self.model, spec.blocks)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            return [f"decoder blocks (a ModuleList at {_first(spec.blocks)})"]
        missing = [f"{_first(p)}" for p in (spec.embed_tokens, spec.final_norm, spec.lm_head)
                   if _get(self.model, p) is None]
        # validate on a block that still has both sublayers (sparsekit may have removed some, see surgery)
        block = next((b for b in blocks if not any(getattr(_get(b, p), "skipped", False)
                                                   for p in (spec.attention, spec.mlp))), None)
        if block is None:
            return missing
        per_block = [spec.attention, spec.mlp, *spec.norms, *spec.projections]
        per_block += [p for p in (spec.router, spec.experts, spec.shared_expert) if p]
        missing += [f"block.{p}" for p in per_block if _get(block, p) is None]
        missing += [f"block.{p} (not an nn.Linear)" for p in spec.projections  # (or a sparsekit.nn packed one)
                    if _get(block, p) is not None and not isinstance(_get(block, p), nn.Linear)
                    and not getattr(_get(block, p), "packed", False)]
        return missing

    # -- model-level parts ---------------------------------------------------------------------
    @property
    def blocks(self) -> nn.ModuleList:
        return _get(self.model, self._blocks_path)  # type: ignore[return-value]

    @property
    def blocks_path(self) -> str:
        """Dotted path of the decoder blocks, e.g. 'model.layers' (block i is f'{path}.{i}')."""
        return self._blocks_path

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def embed_tokens(self) -> nn.Module:
        return _get(self.model, self.spec.embed_tokens)  # type: ignore[return-value]

    @property
    def final_norm(self) -> nn.Module:
        return _get(self.model, self.spec.final_norm)  # type: ignore[return-value]

    @property
    def lm_head(self) -> nn.Module:
        return _get(self.model, self.spec.lm_head)  # type: ignore[return-value]

    # -- per-block parts -----------------------------------------------------------------------
    def block(self, i: int) -> nn.Module:
        return self.blocks[i]

    def attention(self, i: int) -> nn.Module:
        return _get(self.blocks[i], self.spec.attention)  # type: ignore[return-value]

    def mlp(self, i: int) -> nn.Module:
        return _get(self.blocks[i], self.spec.mlp)  # type: ignore[return-value]

    def norms(self, i: int) -> dict[str, nn.Module]:
        return {n: _get(self.blocks[i], n) for n in self.spec.norms}  # type: ignore[misc]

    def router(self, i: int) -> nn.Module | None:
        return _get(self.blocks[i], self.spec.router) if self.spec.router else None

    def experts(self, i: int) -> nn.Module | None:
        return _get(self.blocks[i], self.spec.experts) if self.spec.experts else None

    def shared_expert(self, i: int) -> nn.Module | None:
        return _get(self.blocks[i], self.spec.shared_expert) if self.spec.shared_expert else None

    def linears(self, block: int | nn.Module) -> dict[str, nn.Linear]:
        """The block's projections, keyed by block-relative name (e.g. 'self_attn.q_proj'); those of a
        removed sublayer (`sparsekit.models.surgery`) are absent."""
        mod = self.blocks[block] if isinstance(block, int) else block
        found = {name: _get(mod, name) for name in self.spec.projections}
        return {name: m for name, m in found.items() if m is not None}  # type: ignore[misc]

    def role(self, name: str) -> str:
        """Role ('q', 'k', ..., 'down') of a projection given its block-relative name."""
        try:
            return self.spec.projections[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a projection of the '{self.spec.name}' layout; "
                           f"known: {sorted(self.spec.projections)}") from None

    def group(self, name: str) -> str:
        """'attention' or 'mlp' for a projection's block-relative name."""
        return ROLE_GROUP[self.role(name)]

    def __repr__(self) -> str:
        return f"Adapter({self.spec.name}, {self.num_blocks} blocks at {self._blocks_path})"


def get_adapter(model: nn.Module) -> Adapter:
    """The adapter for `model`, by `config.model_type`; unknown types are matched against known layouts."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    spec = ARCHITECTURES.get(model_type) if model_type else None
    if spec is not None:
        return Adapter(model, spec)
    for candidate in ARCHITECTURES.values():
        try:
            adapter = Adapter(model, candidate)
        except UnsupportedArchitectureError:
            continue
        log.info("model_type %r has no registered adapter; its layout matches '%s'", model_type, candidate.name)
        return adapter
    raise UnsupportedArchitectureError(
        f"unsupported architecture {model_type!r} ({type(model).__name__}): sparsekit needs to know where the "
        "decoder blocks are (a ModuleList such as model.layers) and, per block, the attention projections "
        "(q/k/v/o or qkv/o as nn.Linear), the MLP projections (gate/up/down or gate_up/down) and the norms; "
        f"known layouts: {', '.join(sorted(ARCHITECTURES))}; add one with sparsekit.models.register_architecture()")
