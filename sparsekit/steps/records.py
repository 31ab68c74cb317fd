"""Typed records of what each recipe step did: one dataclass per step kind.

`sparsekit.steps.run` appends one record per step to `StepState.records`; `Compressed.steps` holds
them, `storage_bits` and the CLI summary read their attributes, and a checkpoint stores
`[record.to_dict() for record in steps]` as the "steps" list of sparsekit.json. `to_dict` writes
exactly the shape checkpoints have always had (same keys, same order, lists for shapes) and
`StepRecord.from_dict` reads it back into the right class, so old checkpoints and result files read
the same and `from_dict(r.to_dict()) == r`.

| step                                       | record               | modules                      |
|--------------------------------------------|----------------------|------------------------------|
| prune                                      | PruneRecord          | name -> PrunedModule         |
| quantize                                   | QuantizeRecord       | name -> QuantizedModule      |
| prune_heads, prune_channels, prune_experts | WidthRecord          | {} (whole rows/heads removed) |
| drop_sublayers                             | DropSublayersRecord  | {}                           |
| drop_blocks                                | DropBlocksRecord     | {}                           |
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from sparsekit.errors import SparsekitError


@dataclass(frozen=True)
class PrunedModule:
    """One pruned weight: its role ('q', ..., 'down', 'expert', 'extra'), shape, allocated and measured
    sparsity, and the pattern its mask follows (None where the record has none: fused MoE expert
    weights, which older checkpoints store without one)."""

    role: str
    shape: tuple[int, ...]
    target: float
    sparsity: float
    pattern: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "shape": list(self.shape), "target": self.target,
                               "sparsity": self.sparsity}
        if self.pattern is not None:
            out["pattern"] = self.pattern
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PrunedModule":
        return cls(data["role"], tuple(data["shape"]), data["target"], data["sparsity"], data.get("pattern"))


@dataclass(frozen=True)
class QuantizedModule:
    """One quantized weight: role, shape, format name, scale group (0 per channel, -1 per tensor),
    method, the format's true bits per weight (elements + scales) and the element width alone."""

    role: str
    shape: tuple[int, ...]
    format: str
    group_size: int
    method: str
    format_bits_per_weight: float
    element_bits: float

    @property
    def scale_bits_per_weight(self) -> float:
        """What the scales (and zero points) add per weight on top of the elements."""
        return self.format_bits_per_weight - self.element_bits

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "shape": list(self.shape), "format": self.format, "group_size": self.group_size,
                "method": self.method, "format_bits_per_weight": self.format_bits_per_weight,
                "element_bits": self.element_bits}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantizedModule":
        return cls(data["role"], tuple(data["shape"]), data["format"], data["group_size"], data["method"],
                   data["format_bits_per_weight"], data["element_bits"])


@dataclass
class StepRecord(ABC):
    """What every step record has: the step's name, its wall time and its per-module results (empty for
    structured steps, which remove whole rows, heads or blocks instead of masking weights)."""

    step: str
    seconds: float = 0.0
    modules: dict[str, Any] = field(default_factory=dict)

    #: step names -> record class, filled by `record_kind`; `from_dict` dispatches on it
    KINDS: ClassVar[dict[str, type["StepRecord"]]] = {}

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The record as sparsekit.json stores it."""

    def summary(self) -> str:
        """One line for `sparsekit compress` (after 'step i    <name>'); a kind may say more."""
        return f" in {self.seconds:.1f} s"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StepRecord":
        """The typed record of a stored step dict (called on `StepRecord`, any kind; on a subclass, its kind)."""
        if not isinstance(data, dict) or "step" not in data:
            raise SparsekitError(f"a step record is a mapping with a 'step' key, got {data!r}")
        kind = StepRecord.KINDS.get(data["step"])
        if kind is None:
            raise SparsekitError(f"step record {data['step']!r} is not one of {', '.join(StepRecord.KINDS)}")
        if cls is not StepRecord and not issubclass(kind, cls):
            raise SparsekitError(f"a {data['step']!r} record is not a {cls.__name__}")
        return kind._parse(data)

    @classmethod
    @abstractmethod
    def _parse(cls, data: dict[str, Any]) -> "StepRecord":
        """The record of one stored dict of this kind (keys as `to_dict` writes them)."""


def record_kind(*names: str) -> Callable[[type[StepRecord]], type[StepRecord]]:
    """Register a record class for the stored step names it reads (a new step type's record uses it)."""
    def register(cls: type[StepRecord]) -> type[StepRecord]:
        for name in names:
            StepRecord.KINDS[name] = cls
        return cls
    return register


@record_kind("prune")
@dataclass
class PruneRecord(StepRecord):
    """A prune step: overall mask sparsity, per-module results and how the ratios were allocated
    (OWL's outlier ratios, the search's measurements; empty for uniform / per_type / global)."""

    step: str = "prune"
    modules: dict[str, PrunedModule] = field(default_factory=dict)
    sparsity: float = 0.0
    allocation: dict[str, Any] = field(default_factory=dict)
    #: block-wise reconstruction (`reconstruct` option): block index -> [relative error before, after]
    reconstruction: dict[str, list[float]] = field(default_factory=dict)
    #: channel permutation (`permute` option): module -> input channels that moved (folded into the weights)
    permuted: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        by_role: dict[str, list[int]] = {}
        for mod in self.modules.values():
            numel = math.prod(mod.shape)
            acc = by_role.setdefault(mod.role, [0, 0])
            acc[0] += round(mod.sparsity * numel)
            acc[1] += numel
        roles = "  ".join(f"{role} {removed / total:.3f}" for role, (removed, total) in by_role.items())
        return f": sparsity {self.sparsity:.4f} over {len(self.modules)} modules in {self.seconds:.1f} s  [{roles}]"

    def to_dict(self) -> dict[str, Any]:
        out = {"step": self.step, "seconds": self.seconds, "sparsity": self.sparsity,
               "modules": {n: m.to_dict() for n, m in self.modules.items()}, "allocation": self.allocation}
        # (only when used: a stored record of a step without them round-trips to the same dict)
        if self.reconstruction:
            out["reconstruction"] = self.reconstruction
        if self.permuted:
            out["permuted"] = self.permuted
        return out

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> "PruneRecord":
        return cls(step=data["step"], seconds=data["seconds"], sparsity=data["sparsity"],
                   modules={n: PrunedModule.from_dict(m) for n, m in data["modules"].items()},
                   allocation=data.get("allocation", {}), reconstruction=data.get("reconstruction", {}),
                   permuted=data.get("permuted", {}))


@record_kind("quantize")
@dataclass
class QuantizeRecord(StepRecord):
    """A quantize step. `joint_with_previous`: it ran inside the preceding SparseGPT prune step's sweep
    (its time is in that step's `seconds`, so its own is 0)."""

    step: str = "quantize"
    modules: dict[str, QuantizedModule] = field(default_factory=dict)
    joint_with_previous: bool = False

    def summary(self) -> str:
        mods = list(self.modules.values())
        fmts = sorted({f"{m.format} ({m.method}, {m.format_bits_per_weight:.3f} bits)" for m in mods})
        how = "in the previous step's sweep" if self.joint_with_previous else f"in {self.seconds:.1f} s"
        return f": {', '.join(fmts)} over {len(mods)} modules {how}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.step, "seconds": self.seconds}
        if self.joint_with_previous:  # (key absent for a step of its own, as checkpoints always had it)
            out["joint_with_previous"] = True
        out["modules"] = {n: m.to_dict() for n, m in self.modules.items()}
        return out

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> "QuantizeRecord":
        return cls(step=data["step"], seconds=data["seconds"],
                   modules={n: QuantizedModule.from_dict(m) for n, m in data["modules"].items()},
                   joint_with_previous=bool(data.get("joint_with_previous", False)))


@record_kind("prune_heads", "prune_channels", "prune_experts")
@dataclass
class WidthRecord(StepRecord):
    """A width step (prune_heads / prune_channels / prune_experts): the units each pruned block kept
    (KV groups, MLP channels or experts, by block index as a string) and the parameters removed."""

    step: str = "prune_channels"
    params_removed: int = 0
    kept: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        widths = sorted(set(self.kept.values()))
        return (f": kept widths {widths} over {len(self.kept)} blocks ({self.params_removed:,} parameters removed) "
                f"in {self.seconds:.1f} s")

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seconds": self.seconds, "params_removed": self.params_removed,
                "kept": self.kept, "modules": {}}

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> "WidthRecord":
        return cls(step=data["step"], seconds=data["seconds"], params_removed=data["params_removed"],
                   kept=data["kept"])


@record_kind("structured_search")
@dataclass
class SearchRecord(StepRecord):
    """A structured_search step: parameters of the decoder blocks before and removed, the widths chosen per
    block ({'kv_groups': n, 'channels': n}; 0: sublayer removed), what each round removed, and for a speedup
    budget the target, the cost model's prediction and the measured speedup."""

    step: str = "structured_search"
    params_before: int = 0
    params_removed: int = 0
    widths: dict[str, dict[str, int]] = field(default_factory=dict)
    rounds: list[dict] = field(default_factory=list)
    speedup: dict | None = None

    def summary(self) -> str:
        share = self.params_removed / self.params_before if self.params_before else 0.0
        fast = f", decode {self.speedup['measured']:.2f}x (target {self.speedup['target']:.2f}x)" if self.speedup else ""
        return f": removed {self.params_removed:,} block parameters ({share:.1%}){fast} in {self.seconds:.1f} s"

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seconds": self.seconds, "params_before": self.params_before,
                "params_removed": self.params_removed, "widths": self.widths, "rounds": self.rounds,
                "speedup": self.speedup, "modules": {}}

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> "SearchRecord":
        return cls(step=data["step"], seconds=data["seconds"], params_before=data["params_before"],
                   params_removed=data["params_removed"], widths=data["widths"], rounds=data["rounds"],
                   speedup=data.get("speedup"))


@record_kind("heal")
@dataclass
class HealRecord(StepRecord):
    """A heal step: optimizer steps and training tokens, the mean distillation loss over the first and the
    last tenth of its steps and over each tenth (`loss_curve`), the step it resumed from (0: a fresh run), and
    the seconds through its first step (setup and any compilation; None in records written before it was kept)."""

    step: str = "heal"
    steps: int = 0
    tokens: int = 0
    loss_first: float | None = None
    loss_last: float | None = None
    resumed_from: int = 0
    loss_curve: list[float] = field(default_factory=list)
    first_step_seconds: float | None = None

    def summary(self) -> str:
        first = "-" if self.loss_first is None else f"{self.loss_first:.4f}"
        last = "-" if self.loss_last is None else f"{self.loss_last:.4f}"
        return (f": {self.steps} steps, {self.tokens:,} tokens, distillation loss {first} -> {last} "
                f"in {self.seconds:.1f} s")

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seconds": self.seconds, "steps": self.steps, "tokens": self.tokens,
                "loss_first": self.loss_first, "loss_last": self.loss_last, "resumed_from": self.resumed_from,
                "loss_curve": list(self.loss_curve), "first_step_seconds": self.first_step_seconds, "modules": {}}

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> "HealRecord":
        return cls(step=data["step"], seconds=data["seconds"], steps=data["steps"], tokens=data["tokens"],
                   loss_first=data["loss_first"], loss_last=data["loss_last"], resumed_from=data["resumed_from"],
                   loss_curve=list(data.get("loss_curve", [])), first_step_seconds=data.get("first_step_seconds"))


@record_kind("reconstruct")
@dataclass
class ReconstructRecord(StepRecord):
    """A reconstruct step: per block, the relative calibration error against the entry model's hidden
    states before and after the fit."""

    step: str = "reconstruct"
    blocks: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> str:
        if not self.blocks:
            return f": no block to fit in {self.seconds:.1f} s"
        before = sum(b for b, _ in self.blocks.values()) / len(self.blocks)
        after = sum(a for _, a in self.blocks.values()) / len(self.blocks)
        return (f": {len(self.blocks)} blocks, mean relative error {before:.4f} -> {after:.4f} in "
                f"{self.seconds:.1f} s")

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seconds": self.seconds, "blocks": self.blocks, "modules": {}}

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> "ReconstructRecord":
        return cls(step=data["step"], seconds=data["seconds"],
                   blocks={str(k): [float(x) for x in v] for k, v in data["blocks"].items()})


@record_kind("drop_sublayers")
@dataclass
class DropSublayersRecord(StepRecord):
    """A drop_sublayers step: the removed sublayers as (block, 'attention' | 'mlp'), the parameters
    removed and the scores they were chosen by ({'base_loss': ..., 'nri' | 'cosine': {'i:kind': score}})."""

    step: str = "drop_sublayers"
    removed: list[tuple[int, str]] = field(default_factory=list)
    params_removed: int = 0
    scores: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        removed = [list(r) for r in self.removed]
        return f" (NRI): removed {removed} ({self.params_removed:,} parameters) in {self.seconds:.1f} s"

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seconds": self.seconds, "removed": [list(r) for r in self.removed],
                "params_removed": self.params_removed, "scores": self.scores, "modules": {}}

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> "DropSublayersRecord":
        return cls(step=data["step"], seconds=data["seconds"], removed=[(int(i), str(k)) for i, k in data["removed"]],
                   params_removed=data["params_removed"], scores=data["scores"])


@record_kind("drop_blocks")
@dataclass
class DropBlocksRecord(StepRecord):
    """A drop_blocks step: how blocks were chosen, which were removed and which (old indices) kept, the
    parameters removed and the scores ({'bi': [...]} or {'angular': [...]}; empty for explicit / last)."""

    step: str = "drop_blocks"
    method: str = "bi"
    removed: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    params_removed: int = 0
    scores: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return (f" ({self.method}): removed blocks {self.removed} ({self.params_removed:,} parameters) in "
                f"{self.seconds:.1f} s")

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seconds": self.seconds, "method": self.method, "removed": self.removed,
                "kept": self.kept, "params_removed": self.params_removed, "scores": self.scores, "modules": {}}

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> "DropBlocksRecord":
        return cls(step=data["step"], seconds=data["seconds"], method=data["method"], removed=data["removed"],
                   kept=data["kept"], params_removed=data["params_removed"], scores=data["scores"])


def records_from_dicts(steps: list[StepRecord | dict[str, Any]]) -> list[StepRecord]:
    """Typed records of a checkpoint's "steps" list (records pass through unchanged)."""
    return [s if isinstance(s, StepRecord) else StepRecord.from_dict(s) for s in steps]
