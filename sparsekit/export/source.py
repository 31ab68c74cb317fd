"""What every exporter reads: a sparsekit checkpoint as a plain Hugging Face model plus, per projection,
the quantizer's codes (`QTensor`) and its pruning pattern.

The serving stacks rebuild the architecture from `config.json`, so a checkpoint whose shapes differ from
what its config describes (per-block widths after head / channel pruning, removed sublayers) cannot be
exported to them: `load_source` refuses it with the first module that differs. Packed projections give
their codes back through `Layout.qtensor()` (so grids carry over exactly); a quantized projection that
no layout took (e.g. int8 with group scales) is re-encoded with its recorded format and kept only if the
re-encoding reproduces its weight bit for bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sparsekit.errors import SparsekitError
from sparsekit.quant.base import QTensor


class ExportError(SparsekitError):
    """What a target format cannot hold (the CLI prints it as one line and exits 2)."""


@dataclass
class Projection:
    """One linear weight as an exporter sees it.

    values: the dense fp32 weight sparsekit computes with (pruned entries exactly 0).
    q: its codes, scales and zero points in dense positions when it is quantized, else None.
    pattern: '2:4', 'unstructured', ... when a prune step masked it, else None.
    mask: its keep-mask when pruned (sparsity comes from it: weights that quantize to 0 are not pruned).
    """

    name: str
    values: torch.Tensor
    q: QTensor | None = None
    pattern: str | None = None
    mask: torch.Tensor | None = None

    @property
    def sparsity(self) -> float:
        return 0.0 if self.mask is None else 1.0 - float(self.mask.float().mean())


@dataclass
class Source:
    """A loaded checkpoint ready to export: `model` holds plain `nn.Linear` modules with `values` as weights."""

    path: Path
    meta: dict[str, Any]
    model: torch.nn.Module
    tokenizer: Any
    projections: dict[str, Projection] = field(default_factory=dict)

    @property
    def quantized(self) -> dict[str, Projection]:
        return {name: p for name, p in self.projections.items() if p.q is not None}


def _records(meta: dict) -> tuple[dict[str, str], dict[str, Any]]:
    """(module -> prune pattern, module -> QuantizedModule record) from the stored step records."""
    from sparsekit.steps.records import PruneRecord, QuantizeRecord, records_from_dicts

    patterns: dict[str, str] = {}
    quant: dict[str, Any] = {}
    for record in records_from_dicts(meta.get("steps") or []):
        if isinstance(record, PruneRecord):
            for name, mod in record.modules.items():
                patterns[name] = mod.pattern or "unstructured"
        elif isinstance(record, QuantizeRecord):
            quant.update(record.modules)
    return patterns, quant


def _reencode(name: str, weight: torch.Tensor, rec: Any) -> QTensor:
    """The codes of a quantized weight stored unpacked, if its recorded format reproduces it exactly."""
    from sparsekit.quant.formats import get_format

    for symmetric in (True, False):
        try:
            fmt = get_format(rec.format, rec.group_size, symmetric)
        except SparsekitError:
            continue
        q = fmt.quantize(weight)
        if torch.equal(fmt.dequantize(q), weight.float()):
            return q
    raise ExportError(f"{name} holds {rec.format} weights (group {rec.group_size}) that no packed layout stored, and "
                      "re-encoding them does not give the same values back; export needs the exact codes: compress "
                      "with a format that packs (int4 / int8 per channel / 2:4) or export the dense checkpoint")


def check_config_shapes(model: torch.nn.Module, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a model whose weight shapes are not the ones its config.json describes."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(model.config)
    want = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    for key, shape in shapes.items():
        if key in want and want[key] != tuple(shape):
            raise ExportError(f"{key} is {list(shape)} but config.json describes {list(want[key])}: the checkpoint has "
                              "per-block widths (structured pruning), which serving stacks cannot rebuild from one "
                              "config; export a checkpoint with uniform widths")
    missing = sorted(set(want) - set(shapes))
    if missing:
        raise ExportError(f"{missing[0]} (and {len(missing) - 1} other tensors) of the architecture are absent: the "
                          "checkpoint removed sublayers, which config.json cannot describe to a serving stack")


def load_source(path: str | os.PathLike) -> Source:
    """Load checkpoint `path` on the CPU in fp32 and unpack every packed projection (see module docstring)."""
    from sparsekit.checkpoint import load_checkpoint, load_masks, read_metadata
    from sparsekit.nn.packed import PackedLinear

    path = Path(path).expanduser()
    meta = read_metadata(path)
    if meta is None:
        raise SparsekitError(f"{path} is not a sparsekit checkpoint (no sparsekit.json); write one with "
                             "`sparsekit compress MODEL --recipe R --out DIR`")
    model, tokenizer = load_checkpoint(path, torch.float32, backend="reference")
    patterns, quant = _records(meta)
    masks = load_masks(path)
    projections: dict[str, Projection] = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, PackedLinear):
            layout = module.layout()
            values = layout.unpack().float()
            linear = torch.nn.Linear(values.shape[1], values.shape[0], bias=module.bias is not None)
            with torch.no_grad():
                linear.weight.copy_(values)
                if module.bias is not None:
                    linear.bias.copy_(module.bias.float())
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, linear)
            projections[name] = Projection(name, values, layout.qtensor(), patterns.get(name), masks.get(name))
        elif isinstance(module, torch.nn.Linear) and (name in quant or name in patterns):
            values = module.weight.detach().float()
            q = _reencode(name, values, quant[name]) if name in quant else None
            projections[name] = Projection(name, values, q, patterns.get(name), masks.get(name))
    check_config_shapes(model, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    return Source(path, meta, model, tokenizer, projections)
