"""Run a `Quantize` recipe step over a model: RTN module by module, or GPTQ block by block.

- **RTN** needs no data: every targeted projection is rounded to the format's grid, its scales taken
  from the kept weights only.
- **GPTQ** runs inside the layer-wise calibrator with Hessians (X^T X per projection): block i is
  calibrated on the outputs of the already-quantized blocks 0..i-1 (sequential, as the paper) unless
  `sequential: false`.
- After a prune step the keep-masks are passed in: pruned weights stay exactly 0 and are never
  counted in a scale. (`joint: true` is not run here: `sparsekit.steps.prune.run_prune_quantize`
  runs GPTQ inside SparseGPT's sweep; the checks below are shared with it.)

The model's weights are replaced by their dequantized values (the accuracy the format gives); the
codes and scales are packed for the kernels by `sparsekit.pack`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from sparsekit.calib.engine import CalibSettings, LayerwiseCalibrator
from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import Adapter
from sparsekit.quant.base import QTensor, remask
from sparsekit.quant.gptq import gptq
from sparsekit.quant.splitquant import SplitQuant
from sparsekit.recipe import Quantize
from sparsekit.steps.records import QuantizedModule, QuantizeRecord
from sparsekit.steps.targets import Target, by_block, module_of, own_weights, step_targets
from sparsekit.utils.device import resolve_device


@dataclass
class QuantizeResult:
    """Per-module outcome of a quantize step."""

    targets: list[Target]
    modules: dict[str, QuantizedModule] = field(default_factory=dict)
    qtensors: dict[str, QTensor] = field(default_factory=dict, repr=False)  # codes + scales (CPU), for packing
    seconds: float = 0.0
    joint: bool = False  # ran inside the preceding SparseGPT step's sweep (its time is counted there)

    def record(self) -> QuantizeRecord:
        """What a checkpoint stores about this step."""
        return QuantizeRecord(seconds=self.seconds, modules=dict(self.modules), joint_with_previous=self.joint)


def module_record(t: Target, step: Quantize, shape: tuple[int, int]) -> QuantizedModule:
    """What a checkpoint records about one quantized module."""
    fmt = step.quant_format()
    return QuantizedModule(t.role, tuple(shape), step.format, fmt.group_size, step.method,
                           fmt.bits_per_weight(shape), fmt.element_bits)


def check_quantize_shapes(adapter: Adapter, step: Quantize, targets: list[Target] | None = None) -> None:
    """Raise (naming the module) if the step's scale groups cannot tile a targeted weight; `targets`
    defaults to what the step selects."""
    if targets is None:
        targets = step_targets(adapter, step)
    fmt = step.quant_format()
    for t in targets:
        shape = tuple(module_of(adapter, t).weight.shape)
        try:
            fmt.group_width(shape[1], shape[0])
        except SparsekitError as exc:
            raise SparsekitError(f"{t.name}: {exc}") from None


def check_quantize_targets(adapter: Adapter, step: Quantize, targets: list[Target]) -> None:
    """Everything that can refuse `targets` before a weight changes: group tiling and NaN/Inf weights."""
    check_quantize_shapes(adapter, step, targets)
    fmt = step.quant_format()
    for t in targets:
        fmt.check_finite(module_of(adapter, t).weight, t.name)


@torch.no_grad()
def run_quantize(model: nn.Module, adapter: Adapter, step: Quantize, calib_ids: torch.Tensor | None = None, *,
                 masks: dict[str, torch.Tensor] | None = None, device: torch.device | str = "cpu",
                 progress: bool = True, settings: CalibSettings | None = None) -> QuantizeResult:
    """Apply `step` to `model` in place; `masks` (keep-masks by full name) protect pruned zeros;
    `settings`: batch size and precision of GPTQ's calibration forwards (`CalibSettings`)."""
    if step.joint:
        raise SparsekitError("quantize: joint: true runs inside the preceding sparsegpt prune step; use "
                             "sparsekit.compress or sparsekit.steps.prune.run_prune_quantize, which pair the two steps")
    start = time.perf_counter()
    masks = masks or {}
    targets = step_targets(adapter, step)
    check_quantize_targets(adapter, step, targets)
    fmt = step.quant_format()
    if step.needs_data and calib_ids is None:
        raise SparsekitError(f"quantize: method {step.method!r} needs calibration data (calib_ids)")
    own_weights(adapter, targets)
    result = QuantizeResult(targets)

    def keep_of(t: Target, weight: torch.Tensor) -> torch.Tensor | None:
        keep = masks.get(t.name)
        return None if keep is None else keep.to(weight.device)

    if step.method == "rtn":
        for t in tqdm(targets, desc=f"{step.format} rtn", unit="module", disable=not progress):
            linear = module_of(adapter, t)
            w = linear.weight.data
            keep = keep_of(t, w)
            if isinstance(fmt, SplitQuant):  # three codes per weight: no packed layout, values only
                linear.weight.data.copy_(fmt.fake_quantize(w, keep, name=t.name))
                continue
            q = fmt.quantize(w, keep, name=t.name)
            linear.weight.data.copy_(remask(fmt.dequantize(q), keep, w.dtype))
            result.qtensors[t.name] = q.cpu()
    else:
        groups = by_block(targets)
        rels = list(dict.fromkeys(t.rel for t in targets))
        calib = LayerwiseCalibrator(model, adapter=adapter, device=resolve_device(device), hessian=True,
                                    linears=rels, sequential=step.sequential, settings=settings, progress=progress)
        for ctx in calib.blocks(calib_ids):
            linears = ctx.linears()
            for t in groups.get(ctx.index, []):
                w = linears[t.rel].weight.data
                new, q = gptq(w, ctx.stats[t.rel].xtx, fmt, mask=keep_of(t, w), act_order=step.act_order,
                              blocksize=step.blocksize, dampening=step.dampening, name=t.name)
                linears[t.rel].weight.data.copy_(new)
                result.qtensors[t.name] = q.cpu()
                ctx.stats[t.rel] = None  # type: ignore[assignment]  # free the Hessian early
    for t in targets:
        result.modules[t.name] = module_record(t, step, tuple(module_of(adapter, t).weight.shape))
    result.seconds = time.perf_counter() - start
    return result
