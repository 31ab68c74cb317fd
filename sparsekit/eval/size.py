"""True storage accounting: what the weights occupy, and how sparse the prunable projections are."""

from __future__ import annotations

import math

import torch

from sparsekit.models.adapters import Adapter


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of every tensor the model would save (parameters and persistent buffers: packed values,
    metadata and scales included), counting tied / shared storage once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for tensor in model.state_dict(keep_vars=True).values():
        if tensor.device.type == "meta":
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        total += tensor.numel() * tensor.element_size()
    return total


def lm_head_precision(model: torch.nn.Module) -> str | None:
    """What the output embedding (LM head) runs in, since every decoded token streams all of it: its packed
    layout ('int8 (packed)'), or its dtype and whether it is the input embeddings' weight ('float32 (tied)'),
    and the kernel where it is not torch's ('float32 (tied, sparsekit GEMV)': a `sparsekit.nn.DenseLinear`).
    None for a model without one."""
    get_out = getattr(model, "get_output_embeddings", None)
    head = get_out() if callable(get_out) else None
    if head is None:
        return None
    layout = getattr(head, "layout", None)
    if callable(layout):  # a sparsekit.nn.PackedLinear (not imported here: eval/ sits below nn/)
        return f"{layout().KIND} (packed)"
    weight = getattr(head, "weight", None)
    if weight is None:
        return type(head).__name__
    get_in = getattr(model, "get_input_embeddings", None)
    tied = callable(get_in) and getattr(get_in(), "weight", None) is weight
    # a sparsekit.nn.DenseLinear: 'sparsekit GEMV', which serves CPU weights only
    kernel = getattr(head, "kernel", None) if weight.device.type == "cpu" else None
    return f"{str(weight.dtype).removeprefix('torch.')} ({'tied' if tied else 'untied'}{f', {kernel}' if kernel else ''})"


def projection_sparsity(adapter: Adapter) -> float:
    """Fraction of exact zeros over the weights of every block projection (the prunable Linears)."""
    zeros = total = 0
    for i in range(adapter.num_blocks):
        for linear in adapter.linears(i).values():
            # a packed module (sparsekit.nn) has no .weight: count the zeros of the weight it computes with
            w = linear.dequantized_weight() if hasattr(linear, "dequantized_weight") else linear.weight
            zeros += int((w == 0).sum())
            total += w.numel()
    return zeros / total if total else 0.0


def packed_bits_per_weight(shape: tuple[int, int], *, element_bits: float, overhead_bits: float = 0.0,
                           sparsity: float = 0.0, pattern: str = "unstructured") -> float:
    """Bits per weight of a `[out, in]` projection once packed for the kernels.

    - dense: `element_bits` + `overhead_bits` (scales and zero points per weight, from the format);
    - N:M: only the N kept values of each group of M are stored, each with a ceil(log2 M)-bit
      position (2:4: 2 bits, the metadata `mma.sp` reads), so (N/M) x (element + index) + overhead —
      2:4 fp16 = 9, int4 g128 + 2:4 = 3.125 (docs/ARCHITECTURE.md §7);
    - unstructured: a 1-bit keep-mask plus the kept values when that is smaller than dense storage.
    Group scales stay per group of the dense layout, so `overhead_bits` is not reduced by sparsity.
    """
    from sparsekit.prune.patterns import parse_pattern

    p = parse_pattern(pattern)
    if p.structured:
        return (p.n / p.m) * (element_bits + math.ceil(math.log2(p.m))) + overhead_bits
    if sparsity > 0:
        return min(element_bits, (1.0 - sparsity) * element_bits + 1.0) + overhead_bits
    return element_bits + overhead_bits


def compressed_bytes(model: torch.nn.Module, storage: dict[str, float], dense_bits: int | None = None) -> int:
    """True weight bytes when the modules of `storage` (full name -> bits per weight of its weight) are
    packed: a dense weight of such a module counts at those bits, every other tensor at its dtype's size
    (or `dense_bits`, e.g. 16 to count an fp32-evaluated model as stored in bf16). Modules already
    packed (`sparsekit.nn`) hold no `.weight`: their buffers are the storage and count as they are."""
    state = model.state_dict(keep_vars=True)
    simulated = {name for name in storage if f"{name}.weight" in state}
    skip = {f"{name}.weight" for name in simulated}
    seen: set[tuple[int, int]] = set()
    bits = 0.0
    for key, tensor in state.items():
        if tensor.device.type == "meta" or key in skip:
            continue
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if ident in seen:
            continue
        seen.add(ident)
        size = dense_bits if dense_bits is not None and tensor.is_floating_point() else tensor.element_size() * 8
        bits += tensor.numel() * size
    for name in simulated:
        bits += state[f"{name}.weight"].numel() * storage[name]
    return int(math.ceil(bits / 8))
