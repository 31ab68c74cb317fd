"""Which projections a prune or quantize step touches: full module names, block by block."""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass

from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import Adapter
from sparsekit.models.surgery import untie_weight
from sparsekit.recipe import Prune, Quantize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """One prunable projection: block index, block-relative name, full name and role."""

    block: int
    rel: str
    name: str
    role: str


def select_targets(adapter: Adapter, step: Prune | Quantize) -> list[Target]:
    """The projections that `step` touches, in block order."""
    out: list[Target] = []
    if not step.targets:  # only `modules` (outside the decoder blocks) are targeted
        return out
    for i in range(adapter.num_blocks):
        for rel in adapter.linears(i):  # (a removed sublayer's projections are gone)
            name = f"{adapter.blocks_path}.{i}.{rel}"
            if any(fnmatch.fnmatchcase(name, p) for p in step.targets) and \
                    not any(fnmatch.fnmatchcase(name, p) for p in step.exclude):
                out.append(Target(i, rel, name, adapter.role(rel)))
    if not out:
        example = f"{adapter.blocks_path}.0.{next(iter(adapter.spec.projections))}"
        raise SparsekitError(f"{step.NAME}: targets {step.targets} minus exclude {step.exclude} match no module; "
                             f"module names look like {example!r}")
    return out


def by_block(targets: list[Target]) -> dict[int, list[Target]]:
    """Targets grouped by block index."""
    out: dict[int, list[Target]] = {}
    for t in targets:
        out.setdefault(t.block, []).append(t)
    return out


def select_modules(adapter: Adapter, step: Prune | Quantize) -> list[Target]:
    """nn.Linear modules outside the decoder blocks matched by `step.modules` (vision tower, projector, ...)."""
    import torch.nn as nn

    if not step.modules:
        return []
    inside = adapter.blocks_path + "."
    out = [Target(-1, name, name, "extra") for name, mod in adapter.model.named_modules()
           if isinstance(mod, nn.Linear) and not name.startswith(inside)
           and any(fnmatch.fnmatchcase(name, p) for p in step.modules)
           and not any(fnmatch.fnmatchcase(name, p) for p in step.exclude)]
    if not out:
        raise SparsekitError(f"{step.NAME}: modules {step.modules} match no nn.Linear outside the decoder blocks")
    return out


def step_targets(adapter: Adapter, step: Prune | Quantize) -> list[Target]:
    """Everything `step` touches: the block projections (`select_targets`), then the modules outside the
    blocks (`select_modules`; data-free methods only, which recipe validation enforces)."""
    return select_targets(adapter, step) + select_modules(adapter, step)


def own_weights(adapter: Adapter, targets: list[Target]) -> None:
    """Untie every module outside the blocks that shares its weight (a tied LM head), before a step changes
    it in place: the modules it shared with (the input embeddings) keep their exact values."""
    for t in targets:
        if t.block < 0:
            sharers = untie_weight(adapter.model, t.name)
            if sharers:
                log.info("%s shared its weight with %s; untied (a copy of %s elements) so that they stay exact",
                         t.name, ", ".join(sharers), f"{module_of(adapter, t).weight.numel():,}")


def module_of(adapter: Adapter, t: Target):
    """The nn.Linear a target names (a block projection, or a module outside the blocks)."""
    return adapter.model.get_submodule(t.name) if t.block < 0 else adapter.linears(t.block)[t.rel]
