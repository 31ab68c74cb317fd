"""Recipes: an ordered list of typed steps that round-trips through YAML / dicts (docs/ARCHITECTURE.md §8).

```yaml
- prune: {method: sparsegpt, sparsity: 0.5, pattern: "2:4"}
- prune: {method: wanda, sparsity: 0.6, allocation: search}
- prune: {method: wanda, allocation: per_type, ratios: {attention: 0.3, mlp: 0.6}}
- prune: {method: wanda, sparsity: 0.7, allocation: owl, owl: {threshold: 5, spread: 0.08}}
- prune: {method: magnitude, sparsity: 0.5, targets: ["*.mlp.*"], exclude: ["model.layers.0.*"]}
```

Each step is a dataclass whose fields are the YAML keys; validation happens on construction and
every problem is a `SparsekitError` naming the step, the key and the allowed values. A recipe may
also be given by a built-in name (`sparsekit compress smollm2-135m --recipe wanda-2:4`), see
`builtin_recipes()`.

What a method needs and allows (calibration statistics, N:M support, scores comparable across layers,
...) is asked of its traits (`sparsekit.prune.methods.TRAITS`, `sparsekit.quant.formats.QUANT_METHOD_TRAITS`);
the checks here name no method, so error messages list whichever methods have the trait.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from sparsekit.errors import SparsekitError
from sparsekit.prune.methods import METHODS, MethodTraits, method_traits, methods_with
from sparsekit.prune.patterns import parse_pattern
from sparsekit.prune.reconstruct import SCHEDULES
from sparsekit.quant.formats import (QUANT_METHOD_TRAITS, QUANT_METHODS, QuantMethodTraits, get_format,
                                     quant_methods_for, quant_methods_with)

PRUNE_METHODS = METHODS
ALLOCATIONS = ("uniform", "global", "per_type", "owl", "search")
#: allocations that measure the model on calibration data (whatever the method)
DATA_ALLOCATIONS = ("owl", "search")


def _either(names: tuple[str, ...]) -> str:
    """'a', 'a or b', 'a, b or c': the methods an error message suggests."""
    return " or ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} or {names[-1]}"


def _check_keys(step: str, cls: type, data: dict[str, Any]) -> None:
    known = [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SparsekitError(f"{step}: unknown option(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}")


def _fraction(step: str, key: str, value: Any, *, upper_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SparsekitError(f"{step}: {key} must be a number in [0, 1], got {value!r}") from None
    if not (0.0 <= v < 1.0 if upper_open else 0.0 <= v <= 1.0) or math.isnan(v):
        raise SparsekitError(f"{step}: {key} must be in [0, {'1)' if upper_open else '1]'}, got {value!r}")
    return v


def _at_least(step: str, key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SparsekitError(f"{step}: {key} must be an integer >= {low}, got {value!r}")


def _check_globs(step: Any, verb: str) -> None:
    """Normalise a step's `targets` / `exclude` / `modules` to lists of glob patterns; a step must target
    something. `modules` (any nn.Linear outside the decoder blocks: a vision tower, a projector) takes
    only data-free methods, since calibration inputs are captured for the language model's blocks."""
    for key in ("targets", "exclude", "modules"):
        value = getattr(step, key)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SparsekitError(f"{step.NAME}: {key} must be a list of glob patterns over module names")
        setattr(step, key, value)
    if not step.targets and not step.modules:
        raise SparsekitError(f"{step.NAME}: targets and modules are empty, so nothing would be {verb}")


@dataclass
class OWLOptions:
    """OWL hyper-parameters: outlier threshold M (a score above M x the block mean is an outlier) and
    spread lambda (block sparsities span [S - lambda, S + lambda])."""

    threshold: float = 5.0
    spread: float = 0.08


@dataclass
class SearchOptions:
    """Sensitivity search: module costs are measured at `ratios` on `nsamples` calibration windows
    (the first ones of the calibration set); `ratios`' maximum caps every module's sparsity."""

    ratios: tuple[float, ...] = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
    nsamples: int = 8


@dataclass
class DSnoTOptions:
    """DSnoT mask refinement (`sparsekit.prune.dsnot`): at most `max_cycles` swaps per output row; growth
    candidates are ranked by contribution / Var(x_j)^`var_power` (the paper's 50 and 1)."""

    max_cycles: int = 50
    var_power: float = 1.0


@dataclass
class ReconstructOptions:
    """Block-wise reconstruction after masking (`sparsekit.prune.reconstruct`): `epochs` passes of Adam at
    learning rate `lr` over the first `nsamples` calibration windows, per block, masks fixed; the epoch
    kept is the one with the least error on all the calibration windows. `target`: 'block' (what the
    dense block computes on the same, already-pruned inputs) or 'model' (what the original model computes
    at this block's output: the block also makes up for the errors of the blocks before it; one more
    block forward per block; on SmolLM2-135M 2:4 it left 22% less error than 'block' after 7 blocks).
    `schedule`: 'constant' (`lr` throughout) or 'linear' (decayed linearly to 0 over the fit's steps: an
    Adam step moves each weight by about `lr` whatever its gradient's size, so at a constant rate the
    weights keep circling the optimum up to the last step)."""

    epochs: int = 4
    lr: float = 2e-3
    nsamples: int = 32
    target: str = "model"
    schedule: str = "constant"


def _check_fit(step: str, prefix: str, fit: Any) -> None:
    """The options every block-reconstruction fit has (the prune step's `reconstruct:` block and the
    `reconstruct` step): at least one epoch and one window, a positive learning rate."""
    _at_least(step, f"{prefix}epochs", fit.epochs, 1)
    _at_least(step, f"{prefix}nsamples", fit.nsamples, 1)
    if not float(fit.lr) > 0:
        raise SparsekitError(f"{step}: {prefix}lr must be > 0, got {fit.lr}")
    if fit.schedule not in SCHEDULES:
        raise SparsekitError(f"{step}: {prefix}schedule must be one of {', '.join(SCHEDULES)}, got {fit.schedule!r}")


def _optional(step: str, key: str, cls: type, value: Any) -> Any:
    """An optional nested option block: null / false (off), true (the defaults) or a mapping."""
    if value is None or value is False:
        return None
    if value is True:
        return cls()
    return _nested(step, key, cls, value)


@dataclass
class Prune:
    """Unstructured or N:M pruning of the block projections (see `sparsekit.steps.prune`).

    method: magnitude | wanda | ria | sparsegpt.
    sparsity: fraction of the targeted weights to remove (unstructured); N:M patterns imply 1 - N/M.
    pattern: 'unstructured' or 'N:M' along the input dimension (2:4, 4:8, ...).
    allocation: uniform | global (one magnitude threshold over all modules) | per_type (`ratios`)
        | owl (`owl` options) | search (`search` options).
    ratios: per_type ratios keyed by role (q, k, v, o, gate, up, down) or group (attention, mlp);
        modules of other types get `sparsity`.
    targets / exclude: glob patterns over full module names ('model.layers.3.mlp.down_proj');
        a module is pruned when it matches a target and no exclude.
    modules: glob patterns over other nn.Linear modules (a vision tower, a projector: e.g.
        'model.vision_tower.*'); magnitude only.
    experts: also prune the fused MoE expert weights at `sparsity` / `pattern` with MoE-Pruner's score
        |W| x ||X * gate|| (method wanda).
    sequential: calibrate block i on the outputs of the already-pruned blocks (Wanda/SparseGPT).
    blocksize, dampening: SparseGPT's lazy-update block width and relative Hessian dampening.
    permute: reorder input channels where that is exact and free before N:M masking (RIA's channel
        permutation: MLP intermediate channels for down_proj, value channels inside each head for
        o_proj; `sparsekit.prune.permute`).
    dsnot: refine each mask with DSnoT (`true` or `{max_cycles, var_power}`; score methods only).
    reconstruct: after each block is masked, fit its kept weights to the dense block's outputs
        (`true` or `{epochs, lr}`; calibrated methods).
    """

    NAME: ClassVar[str] = "prune"

    method: str = "wanda"
    sparsity: float = 0.5
    pattern: str = "unstructured"
    allocation: str = "uniform"
    ratios: dict[str, float] = field(default_factory=dict)
    owl: OWLOptions = field(default_factory=OWLOptions)
    search: SearchOptions = field(default_factory=SearchOptions)
    targets: list[str] = field(default_factory=lambda: ["*"])
    exclude: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    experts: bool = False
    sequential: bool = True
    blocksize: int = 128
    dampening: float = 0.01
    permute: bool = False
    dsnot: DSnoTOptions | None = None
    reconstruct: ReconstructOptions | None = None

    def __post_init__(self) -> None:
        s = self.NAME
        if self.method not in PRUNE_METHODS:
            raise SparsekitError(f"{s}: method {self.method!r} is not one of {', '.join(PRUNE_METHODS)}")
        traits = self.traits
        if self.allocation not in ALLOCATIONS:
            raise SparsekitError(f"{s}: allocation {self.allocation!r} is not one of {', '.join(ALLOCATIONS)}")
        pattern = parse_pattern(self.pattern)
        self.pattern = str(pattern)
        self.sparsity = pattern.sparsity if pattern.structured else _fraction(s, "sparsity", self.sparsity,
                                                                             upper_open=True)
        if pattern.structured and not traits.nm:
            raise SparsekitError(f"{s}: method {self.method!r} has no N:M selection; use method: "
                                 f"{_either(methods_with('nm'))}, or an unstructured pattern")
        if pattern.structured and self.allocation != "uniform":
            raise SparsekitError(f"{s}: allocation {self.allocation!r} needs an unstructured pattern; {self.pattern} "
                                 "fixes every module's sparsity at 1 - N/M (use targets/exclude to choose modules)")
        if self.allocation == "global" and not traits.global_scores:
            comparable = methods_with("global_scores")
            raise SparsekitError(f"{s}: allocation 'global' ranks raw scores across layers, which only "
                                 f"{_either(comparable)} scores allow; use method: {_either(comparable)}, or "
                                 "allocation: search / owl")
        if self.allocation == "owl" and not traits.activation_aware:
            raise SparsekitError(f"{s}: allocation 'owl' measures outliers of activation-aware (Wanda) scores; "
                                 f"use method: {_either(methods_with('activation_aware'))}")
        if not isinstance(self.ratios, dict):
            raise SparsekitError(f"{s}: ratios must be a mapping such as {{attention: 0.3, mlp: 0.6}}")
        self.ratios = {str(k): _fraction(s, f"ratios.{k}", v) for k, v in self.ratios.items()}
        if self.allocation == "per_type" and not self.ratios:
            raise SparsekitError(f"{s}: allocation 'per_type' needs ratios, e.g. {{attention: 0.3, mlp: 0.6}} or "
                                 "{q: 0.6, k: 0.6, v: 0.3, o: 0.3, gate: 0.5, up: 0.5, down: 0.4}")
        if self.ratios and self.allocation != "per_type":
            raise SparsekitError(f"{s}: ratios are only read by allocation 'per_type' (got allocation "
                                 f"{self.allocation!r})")
        self.owl = _nested(s, "owl", OWLOptions, self.owl)
        self.search = _nested(s, "search", SearchOptions, self.search)
        self.search.ratios = tuple(sorted({_fraction(s, "search.ratios", r) for r in self.search.ratios}))
        if not self.search.ratios or self.search.ratios[0] <= 0:
            raise SparsekitError(f"{s}: search.ratios must be ratios in (0, 1], e.g. [0.3, 0.5, 0.7, 0.9]")
        if self.allocation == "search" and self.sparsity > self.search.ratios[-1]:
            raise SparsekitError(f"{s}: sparsity {self.sparsity} is above the largest search ratio "
                                 f"{self.search.ratios[-1]}; add larger ratios to search.ratios")
        if int(self.search.nsamples) < 1:
            raise SparsekitError(f"{s}: search.nsamples must be >= 1")
        _check_globs(self, "pruned")
        if self.experts and not traits.moe_experts:
            raise SparsekitError(f"{s}: experts: true prunes MoE experts with MoE-Pruner's router-weighted Wanda "
                                 f"score; use method: {_either(methods_with('moe_experts'))}")
        if self.modules and (not traits.data_free or self.allocation != "uniform"):
            raise SparsekitError(f"{s}: modules outside the decoder blocks ({self.modules}) take method "
                                 f"{_either(methods_with('data_free'))} with allocation uniform: calibration inputs "
                                 "are only captured for the decoder blocks")
        if int(self.blocksize) < 1 or (traits.column_blocks and pattern.structured
                                       and int(self.blocksize) % pattern.m):
            raise SparsekitError(f"{s}: {self.method}'s blocksize must be a positive multiple of M={pattern.m or 1}, "
                                 f"got {self.blocksize}")
        if float(self.dampening) < 0:
            raise SparsekitError(f"{s}: dampening must be >= 0, got {self.dampening}")
        if not isinstance(self.permute, bool):
            raise SparsekitError(f"{s}: permute must be true or false, got {self.permute!r}")
        if self.permute and (not pattern.structured or traits.data_free):
            raise SparsekitError(f"{s}: permute reorders channels for an N:M mask scored on calibration data; it needs "
                                 f"an N:M pattern (got {self.pattern}) and a calibrated method (got {self.method})")
        self.dsnot = _optional(s, "dsnot", DSnoTOptions, self.dsnot)
        if self.dsnot is not None:
            if not traits.refinable:
                raise SparsekitError(f"{s}: dsnot refines the masks of score methods on calibration statistics; use "
                                     f"method: {_either(methods_with('refinable'))}")
            _at_least(s, "dsnot.max_cycles", self.dsnot.max_cycles, 1)
            if float(self.dsnot.var_power) < 0:
                raise SparsekitError(f"{s}: dsnot.var_power must be >= 0, got {self.dsnot.var_power}")
        self.reconstruct = _optional(s, "reconstruct", ReconstructOptions, self.reconstruct)
        if self.reconstruct is not None:
            if traits.data_free:
                calibrated = tuple(m for m in PRUNE_METHODS if not method_traits(m).data_free)
                raise SparsekitError(f"{s}: reconstruct fits each block on calibration inputs; method {self.method!r} "
                                     f"uses none: use method: {_either(calibrated)}")
            _check_fit(s, "reconstruct.", self.reconstruct)
            if self.reconstruct.target not in ("block", "model"):
                raise SparsekitError(f"{s}: reconstruct.target must be 'block' or 'model', got {self.reconstruct.target!r}")

    @property
    def traits(self) -> MethodTraits:
        """What this step's method needs and allows (`sparsekit.prune.methods.TRAITS`)."""
        return method_traits(self.method)

    @property
    def needs_data(self) -> bool:
        """Whether this step reads calibration data."""
        return not self.traits.data_free or self.allocation in DATA_ALLOCATIONS


BLOCK_METHODS = ("bi", "angular", "last", "explicit")
#: block-removal methods that score blocks on calibration data (the others choose by index)
SCORED_BLOCK_METHODS = ("bi", "angular")


@dataclass
class DropBlocks:
    """Remove whole decoder blocks (see `sparsekit.steps.structured`).

    n: how many blocks to remove.
    method: bi (ShortGPT's Block Influence: the n least influential blocks) | angular (Gromov et al.:
        the contiguous span of n blocks whose input and output are closest in angle) | last (the last n
        blocks before the final norm) | explicit (`blocks`).
    blocks: the block indices to remove, for method explicit.
    tokens: angular distance on the 'last' token of each calibration window (the paper) or on 'all'.
    nsamples: calibration windows the scores are measured on (the first ones of the calibration set).
    stack: dotted path of another stack of blocks (e.g. 'model.vision_tower.encoder.layers'); default
        the language model's decoder blocks.
    """

    NAME: ClassVar[str] = "drop_blocks"

    n: int = 1
    method: str = "bi"
    blocks: list[int] = field(default_factory=list)
    tokens: str = "last"
    nsamples: int = 32
    stack: str | None = None

    def __post_init__(self) -> None:
        s = self.NAME
        if self.stack is not None and (not isinstance(self.stack, str) or self.method in SCORED_BLOCK_METHODS):
            raise SparsekitError(f"{s}: stack (another ModuleList of blocks, e.g. a vision tower's layers) takes "
                                 "method explicit or last: scores need calibration inputs of that stack")
        if self.method not in BLOCK_METHODS:
            raise SparsekitError(f"{s}: method {self.method!r} is not one of {', '.join(BLOCK_METHODS)}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise SparsekitError(f"{s}: n must be a whole number of blocks >= 0, got {self.n!r}")
        if not isinstance(self.blocks, list) or not all(isinstance(b, int) and b >= 0 for b in self.blocks):
            raise SparsekitError(f"{s}: blocks must be a list of block indices >= 0, got {self.blocks!r}")
        if self.method == "explicit":
            self.blocks = sorted(set(self.blocks))
            self.n = len(self.blocks)
        elif self.blocks:
            raise SparsekitError(f"{s}: blocks are only read by method 'explicit' (got method {self.method!r})")
        if self.tokens not in ("last", "all"):
            raise SparsekitError(f"{s}: tokens must be 'last' or 'all', got {self.tokens!r}")
        _at_least(s, "nsamples", self.nsamples, 1)

    @property
    def needs_data(self) -> bool:
        return self.method in SCORED_BLOCK_METHODS and self.n > 0


@dataclass
class DropSublayers:
    """Remove attention and/or MLP sublayers of single blocks (see `sparsekit.steps.structured`).

    budget: fraction of the decoder blocks' parameters to remove (0..1), spent on the candidates with
        the lowest normalised relative impact (NRI) — or, when `attention` / `mlp` counts are given,
        exactly that many attention and MLP sublayers with the lowest NRI of their kind.
    candidates: which kinds may be removed: attention, mlp or both.
    score: 'nri' (loss increase per parameter, a full forward per candidate) or 'cosine' (1 - cos of the
        block output with and without the sublayer, averaged over tokens: one block forward per candidate).
    nsamples: calibration windows the scores are measured on.
    """

    NAME: ClassVar[str] = "drop_sublayers"

    budget: float = 0.0
    attention: int | None = None
    mlp: int | None = None
    candidates: list[str] = field(default_factory=lambda: ["attention", "mlp"])
    score: str = "nri"
    nsamples: int = 8

    def __post_init__(self) -> None:
        s = self.NAME
        if self.score not in ("nri", "cosine"):
            raise SparsekitError(f"{s}: score must be 'nri' or 'cosine', got {self.score!r}")
        self.budget = _fraction(s, "budget", self.budget, upper_open=True)
        for key in ("attention", "mlp"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise SparsekitError(f"{s}: {key} must be a count of sublayers >= 0, got {v!r}")
        counts = self.attention is not None or self.mlp is not None
        if counts and self.budget:
            raise SparsekitError(f"{s}: give either budget (a fraction of parameters) or attention/mlp counts, not both")
        if not counts and not self.budget:
            raise SparsekitError(f"{s}: nothing to remove: set budget (e.g. 0.1) or attention/mlp counts")
        if not isinstance(self.candidates, list) or not self.candidates or \
                any(c not in ("attention", "mlp") for c in self.candidates):
            raise SparsekitError(f"{s}: candidates must be a non-empty list of 'attention' and/or 'mlp'")
        _at_least(s, "nsamples", self.nsamples, 1)

    @property
    def needs_data(self) -> bool:
        return True


@dataclass
class StructuredSearch:
    """One budgeted search over every structure of every block (see `sparsekit.steps.structured_search`):
    per block, how many KV groups (with their query heads) and MLP channels stay, and whether its attention
    or MLP sublayer goes, chosen by measured importance per unit of cost, re-measured on the shrunk model
    after each of `rounds` rounds.

    budget: fraction of parameters to remove: of the decoder blocks' (`budget_of: blocks`, the default) or
        of the whole model's (`budget_of: model`; embeddings and LM head count but are not candidates); or
    speedup: a decode speedup to reach on this device, from a cost model profiled on the real model
        (the achieved speedup is measured after the search and recorded).
    channel_group: MLP channels are removed in chunks of this many (kept widths stay multiples of it).
    bias_compensation: add the removed channels' mean contribution to the next projection's bias (FLAP).
    candidates: which structures may go: heads (KV groups), channels, sublayers (a whole attention / MLP).
    nsamples: calibration windows each measurement runs on.
    score: 'energy' (the residual-stream energy a removal takes out, relative to the block output's) or
        'fisher' (the language-model loss it is expected to cost, from the loss gradients at each module's
        output: one more forward and backward per round; it compares blocks by what the rest of the model
        does with the error).
    """

    NAME: ClassVar[str] = "structured_search"

    budget: float | None = None
    speedup: float | None = None
    budget_of: str = "blocks"
    rounds: int = 4
    channel_group: int = 64
    bias_compensation: bool = True
    candidates: list[str] = field(default_factory=lambda: ["heads", "channels", "sublayers"])
    nsamples: int = 32
    score: str = "energy"

    def __post_init__(self) -> None:
        s = self.NAME
        if self.score not in ("energy", "fisher"):
            raise SparsekitError(f"{s}: score must be energy or fisher, got {self.score!r}")
        if (self.budget is None) == (self.speedup is None):
            raise SparsekitError(f"{s}: give exactly one of budget (a fraction of parameters, e.g. 0.15) or speedup "
                                 "(a measured decode speedup, e.g. 1.15)")
        if self.budget is not None:
            self.budget = _fraction(s, "budget", self.budget, upper_open=True)
            if self.budget <= 0:
                raise SparsekitError(f"{s}: budget must be > 0, got {self.budget}")
        if self.budget_of not in ("blocks", "model"):
            raise SparsekitError(f"{s}: budget_of must be blocks or model, got {self.budget_of!r}")
        if self.speedup is not None:
            try:
                self.speedup = float(self.speedup)
            except (TypeError, ValueError):
                raise SparsekitError(f"{s}: speedup must be a number > 1, got {self.speedup!r}") from None
            if not 1.0 < self.speedup < 10.0:
                raise SparsekitError(f"{s}: speedup must be in (1, 10), got {self.speedup}")
        _at_least(s, "rounds", self.rounds, 1)
        _at_least(s, "channel_group", self.channel_group, 1)
        _at_least(s, "nsamples", self.nsamples, 1)
        if not isinstance(self.bias_compensation, bool):
            raise SparsekitError(f"{s}: bias_compensation must be true or false")
        known = ("heads", "channels", "sublayers")
        if not isinstance(self.candidates, list) or not self.candidates or any(c not in known for c in self.candidates):
            raise SparsekitError(f"{s}: candidates must be a non-empty list of {', '.join(known)}, got "
                                 f"{self.candidates!r}")

    @property
    def needs_data(self) -> bool:
        return True


def _blocks_list(step: str, value: Any) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 0
                                              for b in value):
        raise SparsekitError(f"{step}: blocks must be a list of block indices >= 0 (empty: every block), got {value!r}")
    return sorted(set(value))


@dataclass
class PruneChannels:
    """Width pruning of dense MLPs: remove a fraction of each block's intermediate channels (gate/up rows and
    the matching down columns), the least important by ||W_down[:, j]|| x ||X_j|| on calibration data.

    ratio: fraction of the channels removed in each targeted block.
    round_to: kept widths are rounded up to a multiple of this (8: tensor-core friendly GEMM shapes).
    blocks: block indices to prune (empty: all). nsamples: calibration windows for the scores.
    """

    NAME: ClassVar[str] = "prune_channels"

    ratio: float = 0.25
    round_to: int = 8
    blocks: list[int] = field(default_factory=list)
    nsamples: int = 32

    def __post_init__(self) -> None:
        s = self.NAME
        self.ratio = _fraction(s, "ratio", self.ratio, upper_open=True)
        _at_least(s, "round_to", self.round_to, 1)
        self.blocks = _blocks_list(s, self.blocks)
        _at_least(s, "nsamples", self.nsamples, 1)

    @property
    def needs_data(self) -> bool:
        return self.ratio > 0


@dataclass
class PruneHeads:
    """Width pruning of attention: remove a fraction of each block's KV groups, each KV head together with
    all the query heads that read it (so grouped-query attention stays valid), the least important by the
    output projection's input-channel scores summed over the group's heads.

    ratio: fraction of the KV groups removed in each targeted block (at least one group always stays).
    blocks: block indices to prune (empty: all). nsamples: calibration windows for the scores.
    """

    NAME: ClassVar[str] = "prune_heads"

    ratio: float = 0.25
    blocks: list[int] = field(default_factory=list)
    nsamples: int = 32

    def __post_init__(self) -> None:
        s = self.NAME
        self.ratio = _fraction(s, "ratio", self.ratio, upper_open=True)
        self.blocks = _blocks_list(s, self.blocks)
        _at_least(s, "nsamples", self.nsamples, 1)

    @property
    def needs_data(self) -> bool:
        return self.ratio > 0


@dataclass
class PruneExperts:
    """Drop the least-used experts of every MoE block (router rows removed, top-k kept valid).

    ratio: fraction of each block's experts removed (at least one expert always stays; top-k is capped).
    by: 'frequency' (tokens routed to the expert) or 'weight' (summed routing weight).
    blocks: block indices to prune (empty: every MoE block). nsamples: calibration windows.
    """

    NAME: ClassVar[str] = "prune_experts"

    ratio: float = 0.25
    by: str = "frequency"
    blocks: list[int] = field(default_factory=list)
    nsamples: int = 32

    def __post_init__(self) -> None:
        s = self.NAME
        self.ratio = _fraction(s, "ratio", self.ratio, upper_open=True)
        if self.by not in ("frequency", "weight"):
            raise SparsekitError(f"{s}: by must be 'frequency' or 'weight', got {self.by!r}")
        self.blocks = _blocks_list(s, self.blocks)
        _at_least(s, "nsamples", self.nsamples, 1)

    @property
    def needs_data(self) -> bool:
        return self.ratio > 0


@dataclass
class Quantize:
    """Weight quantization of the block projections (see `sparsekit.steps.quantize`).

    format: a name of `sparsekit.quant.formats.FORMATS` (int8, int4, int3, int2, mxfp8, mxfp6, mxfp4,
        mxint8, fp6, ternary, splitquant-int4, ...).
    group_size: inputs per scale along K; None takes the format's default (int8 per channel, int4/3/2
        128, MX formats 32 — fixed by the spec —, fp6 per channel, ternary per tensor); 0 = per channel.
    method: rtn (round to nearest) | gptq (OBS error compensation from the calibration Hessian).
    symmetric: int formats only; false adds a zero point per group.
    act_order: GPTQ processes inputs by decreasing Hessian diagonal (static groups). Default (None):
        on for GPTQ, off for joint (SparseGPT chooses masks in the natural order) and RTN. On
        SmolLM2-135M int4 g128, plain-order GPTQ loses to RTN (WikiText-2, 4 windows, 32 calibration
        windows: 40.50 vs 38.86) while act-order GPTQ wins (33.69; bench/experiments/gptq_order.py):
        the attention projections' input Hessians are nearly low-rank, and in natural order GPTQ parks
        large weight errors in those directions, which the quantized network's drifting activations
        then excite.
    joint: GPTQ inside the preceding SparseGPT prune step's sweep (prune + quantize in one pass).
    targets / exclude, modules (RTN only), sequential, blocksize, dampening: as in `prune`.

    After a prune step, only kept weights are quantized and pruned weights stay exactly zero.

    One quantize step covers the decoder blocks; a further one may take `targets: []` and `modules`
    outside the blocks in a format of its own, e.g. `{format: int8, targets: [], modules: [lm_head]}`:
    the LM head is streamed whole for every decoded token (on SmolLM2-135M in fp32 it is more bytes than
    all int4 projections together). A head tied to the input embeddings is untied first, so that the
    embeddings stay exact (they cost one row per token).
    """

    NAME: ClassVar[str] = "quantize"

    format: str = "int4"
    group_size: int | None = None
    method: str = "rtn"
    symmetric: bool = True
    act_order: bool | None = None
    joint: bool = False
    targets: list[str] = field(default_factory=lambda: ["*"])
    exclude: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    sequential: bool = True
    blocksize: int = 128
    dampening: float = 0.01

    def __post_init__(self) -> None:
        s = self.NAME
        if self.method not in QUANT_METHODS:
            raise SparsekitError(f"{s}: method {self.method!r} is not one of {', '.join(QUANT_METHODS)}")
        traits = self.traits
        if self.group_size is not None:
            if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
                raise SparsekitError(f"{s}: group_size must be an integer (e.g. 128, or 0 for per channel), "
                                     f"got {self.group_size!r}")
        self.format = str(self.format).lower()
        fmt = get_format(self.format, self.group_size, bool(self.symmetric))  # validates name + grouping
        why = traits.why_not(self.format)
        if why is not None:
            raise SparsekitError(f"{s}: method {self.method} does not drive {self.format!r} ({why}); use method: "
                                 f"{_either(quant_methods_for(self.format))}")
        if self.joint and not traits.joint:
            raise SparsekitError(f"{s}: joint: true runs GPTQ inside SparseGPT's sweep, so it needs method: "
                                 f"{_either(quant_methods_with('joint'))}")
        if self.act_order is None:  # on where the method has it, except inside SparseGPT's natural-order sweep
            self.act_order = traits.act_order and not self.joint
        self.act_order = bool(self.act_order)
        if self.joint and self.act_order:
            raise SparsekitError(f"{s}: joint: true cannot use act_order (SparseGPT's masks are chosen in the "
                                 "natural column order)")
        if self.act_order and not traits.act_order:
            raise SparsekitError(f"{s}: act_order is a GPTQ option; use method: "
                                 f"{_either(quant_methods_with('act_order'))} or drop act_order")
        _check_globs(self, "quantized")
        if self.modules and not traits.data_free:
            raise SparsekitError(f"{s}: modules outside the decoder blocks ({self.modules}) take method "
                                 f"{_either(quant_methods_with('data_free'))}: calibration inputs are only captured "
                                 "for the decoder blocks")
        if int(self.blocksize) < 1:
            raise SparsekitError(f"{s}: blocksize must be >= 1, got {self.blocksize}")
        if traits.column_sweep and fmt.group_size > 0 and int(self.blocksize) % fmt.group_size \
                and fmt.group_size % int(self.blocksize):
            raise SparsekitError(f"{s}: blocksize {self.blocksize} and group_size {fmt.group_size} must divide one "
                                 "another")
        if float(self.dampening) < 0:
            raise SparsekitError(f"{s}: dampening must be >= 0, got {self.dampening}")

    @property
    def traits(self) -> QuantMethodTraits:
        """What this step's method needs and allows (`sparsekit.quant.formats.QUANT_METHOD_TRAITS`)."""
        return QUANT_METHOD_TRAITS[self.method]

    @property
    def needs_data(self) -> bool:
        """Whether this step reads calibration data."""
        return not self.traits.data_free

    def quant_format(self):
        """The format object this step quantizes to."""
        return get_format(self.format, self.group_size, self.symmetric)


def _nested(step: str, key: str, cls: type, value: Any) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise SparsekitError(f"{step}: {key} must be a mapping of {', '.join(f.name for f in dataclasses.fields(cls))}")
    _check_keys(f"{step}.{key}", cls, value)
    return cls(**value)


#: how healing draws its C4 windows (`Heal.windows`)
HEAL_WINDOWS = ("documents", "packed")


@dataclass
class Heal:
    """Healing by distillation (see `sparsekit.steps.heal`): train the compressed model to match the model
    as it entered the recipe (the teacher) on C4 windows, with every pruned weight held at exactly zero.

    tokens: the budget, in training tokens (windows of `seqlen` tokens, `batch_size` per step).
    lr: AdamW peak learning rate (linear warm-up over the first `warmup` fraction, then linear decay).
    temperature: of the softened distributions in the KL loss (the loss is scaled by T^2).
    squarehead: weight of SquareHead feature distillation added to the KL loss (Kurtic et al. 2023, the
        loss Sparse-Llama-3.1-8B-2of4 was healed with): the sum over decoder blocks of the mean squared
        error between student and teacher hidden states, each divided by the teacher's mean square. 0 (the
        default) distils the logits only; the paper's weight is 1.
    seed: draws the training windows (another draw than calibration's seed 0).
    windows: 'documents' (the default, as calibration draws them: a random window of a random document
        longer than `seqlen`) or 'packed' (every document, shuffled, joined by the end-of-text token and
        cut into consecutive windows: no token repeats before every token was used once, and short
        documents count too; `sparsekit.data.packed_windows`).
    resume: a folder for the resumable state (written every `save_every` steps; a later run of the same
        step continues from it), or null.
    teacher: a model name or folder to distil instead (its vocabulary must be the student's): to heal a
        saved compressed checkpoint further against the dense model it came from. Weights that are
        exactly zero when healing starts stay zero, whether a prune step of this recipe or an earlier
        run made them so.
    compile: run the teacher's and the student's forwards (and the student's backward) through
        `torch.compile` (inductor, a C++ compiler on CPU): the norms, activations, casts and residual adds
        fuse into a few loops, after a one-time compilation in the first step (about 2 minutes for
        SmolLM2-135M on two Zen 4 cores). What it saves a step depends on the CPU: `python
        bench/experiments/heal_speed.py --compile both` measures it (the README's heal-speed table). The
        fused loops round in another order, so losses differ from an eager run in the last bits. Not part
        of what a resumed run must match.
    """

    NAME: ClassVar[str] = "heal"

    tokens: int = 262144
    seqlen: int = 512
    batch_size: int = 4
    lr: float = 1e-4
    warmup: float = 0.05
    temperature: float = 1.0
    squarehead: float = 0.0
    seed: int = 1
    windows: str = "documents"
    resume: str | None = None
    save_every: int = 25
    teacher: str | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        s = self.NAME
        _at_least(s, "seqlen", self.seqlen, 2)
        _at_least(s, "batch_size", self.batch_size, 1)
        _at_least(s, "tokens", self.tokens, self.seqlen * self.batch_size)
        _at_least(s, "save_every", self.save_every, 1)
        _at_least(s, "seed", self.seed, 0)
        if not float(self.lr) > 0:
            raise SparsekitError(f"{s}: lr must be > 0, got {self.lr}")
        if not float(self.temperature) > 0:
            raise SparsekitError(f"{s}: temperature must be > 0, got {self.temperature}")
        if not float(self.squarehead) >= 0:
            raise SparsekitError(f"{s}: squarehead must be >= 0 (a loss weight), got {self.squarehead}")
        self.warmup = _fraction(s, "warmup", self.warmup, upper_open=True)
        if self.windows not in HEAL_WINDOWS:
            raise SparsekitError(f"{s}: windows must be one of {', '.join(HEAL_WINDOWS)}, got {self.windows!r}")
        if self.resume is not None and not isinstance(self.resume, str):
            raise SparsekitError(f"{s}: resume must be a folder path or null, got {self.resume!r}")
        if self.teacher is not None and not (isinstance(self.teacher, str) and self.teacher):
            raise SparsekitError(f"{s}: teacher must be a model name or folder, or null, got {self.teacher!r}")
        if not isinstance(self.compile, bool):
            raise SparsekitError(f"{s}: compile must be true or false, got {self.compile!r}")

    @property
    def needs_data(self) -> bool:
        """Healing reads its own C4 windows."""
        return True

    @property
    def steps(self) -> int:
        """Optimizer steps the token budget buys."""
        return self.tokens // (self.seqlen * self.batch_size)


@dataclass
class Reconstruct:
    """Block-wise reconstruction as a step of its own (`sparsekit.steps.reconstruct`): every projection of
    each decoder block in turn, on the model as the earlier steps left it (structurally shrunk, pruned),
    is fitted so that the block's output matches what the model as it entered the recipe computes at that
    block on the calibration windows: the block also makes up for the errors of the blocks before it (the
    prune step's `reconstruct: {target: model}`, for removals the prune step does not make). `epochs`
    passes of Adam at `lr` over the first `nsamples` windows; a block keeps the epoch with the least error
    on all of them, so no block's calibration error grows; `schedule` as the prune step's. Weights that are
    exactly zero stay zero (a mask stays valid). The model must keep the entry model's number of blocks
    (after drop_blocks block i is another block), and quantization comes after it (training moves weights
    off the grid)."""

    NAME: ClassVar[str] = "reconstruct"

    epochs: int = 4
    lr: float = 2e-3
    nsamples: int = 32
    schedule: str = "constant"

    def __post_init__(self) -> None:
        _check_fit(self.NAME, "", self)

    @property
    def needs_data(self) -> bool:
        """It fits the blocks on the calibration windows."""
        return True


STEPS: dict[str, type] = {"drop_blocks": DropBlocks, "drop_sublayers": DropSublayers, "prune_heads": PruneHeads,
                           "prune_channels": PruneChannels, "prune_experts": PruneExperts, "prune": Prune,
                           "quantize": Quantize, "heal": Heal, "structured_search": StructuredSearch,
                           "reconstruct": Reconstruct}


STRUCTURED_STEPS = (DropBlocks, DropSublayers, PruneHeads, PruneChannels, PruneExperts, StructuredSearch)


def _check_order(steps: list[Any]) -> None:
    """Structured steps first (they rename blocks), then prune steps, then quantize steps: at most one over
    the block projections, others over modules outside the blocks only (the LM head in another format);
    `joint` needs a SparseGPT step just before."""
    structured = [i for i, st in enumerate(steps) if isinstance(st, STRUCTURED_STEPS)]
    others = [i for i, st in enumerate(steps) if not isinstance(st, STRUCTURED_STEPS)]
    if structured and others and structured[-1] > others[0]:
        raise SparsekitError(f"recipe step {structured[-1] + 1} ({steps[structured[-1]].NAME}) comes after step "
                             f"{others[0] + 1} ({steps[others[0]].NAME}); structured steps go first, since they "
                             "renumber the blocks that prune/quantize steps record")
    quant = [i for i, st in enumerate(steps) if isinstance(st, Quantize)]
    blocks = [i for i in quant if steps[i].targets]
    if len(blocks) > 1:
        raise SparsekitError(f"recipe steps {blocks[0] + 1} and {blocks[1] + 1} both quantize the decoder blocks' "
                             "projections; a recipe quantizes them once (a further quantize step takes targets: [] "
                             "and modules outside the blocks, e.g. modules: [lm_head])")
    if quant and any(isinstance(st, Prune) for st in steps[quant[0] + 1:]):
        raise SparsekitError(f"recipe step {quant[0] + 1} quantizes before a prune step; put prune steps first")
    heal = [i for i, st in enumerate(steps) if isinstance(st, Heal)]
    if heal and quant and heal[-1] > quant[0]:
        raise SparsekitError(f"recipe step {heal[-1] + 1} (heal) comes after step {quant[0] + 1} (quantize); heal "
                             "before quantizing: training moves weights off the quantization grid")
    fitted = [i for i, st in enumerate(steps) if isinstance(st, Reconstruct)]
    if fitted and quant and fitted[-1] > quant[0]:
        raise SparsekitError(f"recipe step {fitted[-1] + 1} (reconstruct) comes after step {quant[0] + 1} (quantize); "
                             "reconstruct before quantizing: fitting moves weights off the quantization grid")
    if heal and any(isinstance(st, Prune) for st in steps[heal[0] + 1:]):
        raise SparsekitError(f"recipe step {heal[0] + 1} (heal) comes before a prune step; heal after pruning")
    for i in quant:
        before = steps[i - 1] if i > 0 else None
        if steps[i].joint and not (isinstance(before, Prune) and before.traits.joint_quantization):
            raise SparsekitError(f"recipe step {i + 1} (quantize): joint: true needs a prune step with method "
                                 f"{_either(methods_with('joint_quantization'))} right before it")


@dataclass
class Recipe:
    """An ordered list of steps."""

    steps: list[Any] = field(default_factory=list)

    @classmethod
    def from_list(cls, data: Any) -> "Recipe":
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list) or not data:
            raise SparsekitError("a recipe is a non-empty list of steps such as [{prune: {method: wanda, "
                                 "sparsity: 0.5}}]")
        steps = []
        for i, item in enumerate(data):
            if not isinstance(item, dict) or len(item) != 1:
                raise SparsekitError(f"recipe step {i + 1} must be a mapping with exactly one key "
                                     f"({', '.join(STEPS)}), got {item!r}")
            (kind, options), = item.items()
            if kind not in STEPS:
                raise SparsekitError(f"recipe step {i + 1}: unknown step {kind!r}; known: {', '.join(STEPS)}")
            options = {} if options is None else options
            if not isinstance(options, dict):
                raise SparsekitError(f"recipe step {i + 1} ({kind}): options must be a mapping, got {options!r}")
            _check_keys(kind, STEPS[kind], options)
            try:
                steps.append(STEPS[kind](**options))
            except TypeError as exc:
                raise SparsekitError(f"recipe step {i + 1} ({kind}): {exc}") from None
        _check_order(steps)
        return cls(steps)

    def to_list(self) -> list[dict[str, Any]]:
        return [{step.NAME: _plain(dataclasses.asdict(step))} for step in self.steps]

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_list(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_yaml(cls, text: str) -> "Recipe":
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise SparsekitError(f"the recipe is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
        return cls.from_list(data)

    def describe(self) -> str:
        """A short name such as 'wanda 50% unstructured (uniform)'."""
        parts = []
        for step in self.steps:
            if isinstance(step, Prune):
                amount = step.pattern if step.pattern != "unstructured" else f"{step.sparsity:.0%} unstructured"
                extras = [name for name, on in (("permute", step.permute), ("dsnot", step.dsnot is not None),
                                                 ("reconstruct", step.reconstruct is not None)) if on]
                parts.append(f"{step.method} {amount} ({step.allocation})" + "".join(f" + {e}" for e in extras))
            elif isinstance(step, Heal):
                parts.append(f"heal ({step.tokens:,} tokens)")
            elif isinstance(step, Reconstruct):
                parts.append("block-wise reconstruction")
            elif isinstance(step, Quantize):
                parts.append(f"{step.quant_format().describe()} {step.method}" + (" (joint)" if step.joint else ""))
            elif isinstance(step, DropSublayers):
                amount = f"{step.budget:.0%} of block parameters" if step.budget else \
                    f"{step.attention or 0} attention + {step.mlp or 0} mlp"
                parts.append(f"drop sublayers ({amount}, {step.score})")
            elif isinstance(step, (PruneHeads, PruneChannels, PruneExperts)):
                what = {PruneHeads: "KV groups", PruneChannels: "MLP channels", PruneExperts: "experts"}[type(step)]
                parts.append(f"remove {step.ratio:.0%} of {what}")
            elif isinstance(step, StructuredSearch):
                goal = (f"{step.budget:.0%} of {'model' if step.budget_of == 'model' else 'block'} parameters"
                        if step.budget else f"{step.speedup:.2f}x decode")
                extras = "".join(text for text, on in ((", fisher scores", step.score == "fisher"),
                                                       (", bias compensation", step.bias_compensation)) if on)
                parts.append(f"structured search ({goal}{extras})")
            elif isinstance(step, DropBlocks):
                which = f"blocks {step.blocks}" if step.method == "explicit" else f"{step.n} blocks by {step.method}"
                parts.append(f"drop {which}")
        return " + ".join(parts)


def _plain(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return [_plain(o) for o in obj]
    if isinstance(obj, list):
        return [_plain(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def builtin_recipes() -> dict[str, list[dict[str, Any]]]:
    """Named recipes: '{method}-{50|60|70}' (unstructured, uniform), '{method}-{2:4|4:8}',
    '{wanda|sparsegpt}-{50|60}-search', '{format}-{rtn|gptq}' (default grouping of each format) and
    'sparsegpt-{2:4|4:8}+int4-{gptq|joint}' (prune, then GPTQ; or both in one sweep)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for method in PRUNE_METHODS:
        for pct in (50, 60, 70):
            out[f"{method}-{pct}"] = [{"prune": {"method": method, "sparsity": pct / 100}}]
        for pattern in ("2:4", "4:8"):
            out[f"{method}-{pattern}"] = [{"prune": {"method": method, "pattern": pattern}}]
    for method in ("wanda", "sparsegpt"):
        for pct in (50, 60):
            out[f"{method}-{pct}-search"] = [{"prune": {"method": method, "sparsity": pct / 100,
                                                        "allocation": "search"}}]
    for fmt in ("int8", "int4", "int3", "mxfp8", "mxfp6", "mxfp4", "mxint8", "fp6", "ternary"):
        out[f"{fmt}-rtn"] = [{"quantize": {"format": fmt, "method": "rtn"}}]
        out[f"{fmt}-gptq"] = [{"quantize": {"format": fmt, "method": "gptq"}}]
    for pattern in ("2:4", "4:8"):
        prune = {"prune": {"method": "sparsegpt", "pattern": pattern}}
        out[f"sparsegpt-{pattern}+int4-gptq"] = [prune, {"quantize": {"format": "int4", "method": "gptq"}}]
        out[f"sparsegpt-{pattern}+int4-joint"] = [prune, {"quantize": {"format": "int4", "method": "gptq",
                                                                       "joint": True}}]
    return out


def load_recipe(source: "str | Path | Recipe | list | dict") -> Recipe:
    """A `Recipe` from a Recipe, a list/dict of steps, a built-in name, a YAML file path or YAML text."""
    if isinstance(source, Recipe):
        return source
    if isinstance(source, (list, dict)):
        return Recipe.from_list(source)
    text = str(source)
    builtins = builtin_recipes()
    if text in builtins:
        return Recipe.from_list(builtins[text])
    path = Path(text).expanduser()
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.is_file():
        if not path.is_file():
            raise SparsekitError(f"recipe file {path} does not exist")
        return Recipe.from_yaml(path.read_text())
    if "\n" in text or text.lstrip().startswith(("-", "[", "{")):
        return Recipe.from_yaml(text)
    raise SparsekitError(f"recipe {text!r} is neither a YAML file nor a built-in recipe; built-ins: "
                         f"{', '.join(sorted(builtins))}")
