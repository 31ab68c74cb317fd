"""Export to the `compressed-tensors` "pack-quantized" format, the one vLLM and SGLang load.

The `compressed-tensors` library (the format's reference implementation) writes the file: sparsekit
attaches its schemes (`apply_quantization_config`), puts its own scales and zero points in them and
lets `ModelCompressor` pack the codes. The codes it packs are re-derived from the dequantized weight
(`round(w / scale) + zero`), which gives back sparsekit's codes exactly because the weight is on the grid.

Mapping (sparsekit -> compressed-tensors):
- int2/3/4/8, symmetric: codes in [-q, q] and `scale` per group -> `symmetric: true`, the same codes.
- asymmetric: codes c in [0, 2^b - 1] with zero point z -> c - 2^(b-1) and z - 2^(b-1) (the library's
  signed range); (c - z) * scale is unchanged.
- group size g: compressed-tensors needs g to divide in_features (its group kernels read whole groups),
  while sparsekit allows a short last group (SmolLM2's K = 576 at g = 128). Such a weight is written at
  g' = gcd(g, K) (64 there) with each scale repeated g / g' times: the same values, exactly, for
  16 / g' instead of 16 / g bits of scale per weight. vLLM's Marlin kernels need the same divisibility.
- per channel (group 0) -> strategy `channel`.
- pruned weights stay exact zeros in the codes. compressed-tensors 0.20 writes no sparsity config (its
  2:4 compressor was removed in 0.15), so the sparsity is stated in `sparsekit_export.json` beside it.

Not holdable: MX formats, FP6 and ternary (per-tensor absmean) weights; the export refuses them by
name. Scales are stored in the export dtype: float16 (the default) holds sparsekit's fp16 scales
exactly, bfloat16 rounds them (the export says so).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import torch

from sparsekit.export.source import ExportError, Source
from sparsekit.quant.base import QTensor

FORMAT = "compressed-tensors"
INT_FORMATS = {"int2": 2, "int3": 3, "int4": 4, "int8": 8}


def scheme_of(name: str, q: QTensor) -> tuple[int, int, bool]:
    """(bits, group size as written (0: per channel), symmetric) of a projection, or ExportError."""
    if q.format not in INT_FORMATS:
        raise ExportError(f"{name} is {q.format}: compressed-tensors' pack-quantized format holds integer codes "
                          f"(int2/int3/int4/int8) only; export {q.format} models to GGUF or keep the sparsekit "
                          "checkpoint")
    k = q.shape[1]
    if q.group_size < 0:
        raise ExportError(f"{name} has one scale per tensor: compressed-tensors' pack-quantized weights take "
                          "group or channel scales")
    group = 0 if q.group_size in (0, k) else math.gcd(q.group_size, k)
    return INT_FORMATS[q.format], group, q.zeros is None


def role_targets(names: list[str], every: list[str]) -> list[str]:
    """Targets naming `names` compactly: `re:.*mlp\\.down_proj$` for a role (the name after the block index)
    all of whose linear modules (`every`) are here, the modules' full names otherwise."""
    def role(name: str) -> str:
        parts = name.split(".")
        digits = [i for i, p in enumerate(parts) if p.isdigit()]
        return ".".join(parts[digits[-1] + 1:]) if digits else name

    mine: dict[str, list[str]] = defaultdict(list)
    for name in names:
        mine[role(name)].append(name)
    total = defaultdict(int)
    for name in every:
        total[role(name)] += 1
    out = []
    for r, members in sorted(mine.items()):
        out += [f"re:.*{re.escape(r)}$"] if len(members) == total[r] and r not in every else sorted(members)
    return out


def expand_groups(t: torch.Tensor, group: int, written: int, k: int) -> torch.Tensor:
    """Per-group `[N, ceil(K / group)]` scales (or zero points) repeated for groups of `written` inputs."""
    if written in (0, group):
        return t
    index = torch.arange(0, k, written, device=t.device) // group
    return t[:, index]


def export_compressed_tensors(source: Source, out: Path, dtype: torch.dtype = torch.float16) -> dict:
    """Write `source` to folder `out` (created; must not exist) and return what was written (a summary)."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig, QuantizationScheme,
                                                 apply_quantization_config)
    from loguru import logger

    quantized = source.quantized
    if not quantized:
        raise ExportError(f"{source.path} holds no quantized projection: compressed-tensors' pack-quantized format is "
                          "for quantized weights (a pruned-only or dense model is a plain Hugging Face folder: "
                          "sparsekit.load(DIR) and save_pretrained)")
    scheme = {name: scheme_of(name, proj.q) for name, proj in quantized.items()}
    schemes: dict[tuple[int, int, bool], list[str]] = defaultdict(list)
    for name, key in scheme.items():
        schemes[key].append(name)
    linear = [n for n, m in source.model.named_modules() if isinstance(m, torch.nn.Linear)]
    config_groups = {}
    for i, ((bits, group, symmetric), names) in enumerate(sorted(schemes.items())):
        args = QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric,
                                strategy="group" if group else "channel", group_size=group or None)
        # one scheme over every projection: the compact form vLLM configs use; otherwise one regex per role
        targets = ["Linear"] if len(schemes) == 1 else role_targets(names, linear)
        config_groups[f"group_{i}"] = QuantizationScheme(targets=targets, weights=args)
    # every linear module left unquantized is named, whatever the targets: a role regex or "Linear" must not
    # give a dense projection a scheme (the library would pack it with uninitialised scales)
    ignore = sorted(set(linear) - set(quantized))
    model = source.model.to(dtype)
    logger.disable("compressed_tensors")  # it logs one line per module; the summary says what matters
    try:
        apply_quantization_config(model, QuantizationConfig(config_groups=config_groups, ignore=ignore),
                                  show_progress=False)
        with torch.no_grad():
            for name, proj in quantized.items():
                bits, group, symmetric = scheme[name]
                module = source.model.get_submodule(name)
                k = proj.q.shape[1]
                module.weight.data = proj.values.clone()  # fp32: the library re-derives the codes from it
                module.weight_scale.data = expand_groups(proj.q.scales, proj.q.group_size, group, k).to(dtype)
                if not symmetric:
                    zeros = expand_groups(proj.q.zeros, proj.q.group_size, group, k) - 2 ** (bits - 1)
                    module.weight_zero_point.data = zeros.to(module.weight_zero_point.dtype)
        compressor = ModelCompressor.from_pretrained_model(model, quantization_format="pack-quantized")
        compressor.compress_model(model)
        model.save_pretrained(out)
        compressor.update_config(str(out))
    finally:
        logger.enable("compressed_tensors")
    if source.tokenizer is not None:
        source.tokenizer.save_pretrained(out)
    back = read_back(out)
    if back.keys() != quantized.keys():
        raise ExportError(f"the written file packs {sorted(back.keys() ^ quantized.keys())[:3]}, which differ from the "
                          "quantized projections: a bug in the scheme targets, nothing was kept")
    errors = {name: float((back[name].double() - proj.values.double()).abs().max()) for name, proj in quantized.items()}
    regrouped = sorted({(p.q.group_size, g) for (b, g, s), names in schemes.items() for n in names
                        for p in [quantized[n]] if g and g != p.q.group_size})
    return {"schemes": [{"bits": b, "group_size": g or "channel", "symmetric": s, "modules": len(n)}
                        for (b, g, s), n in sorted(schemes.items())],
            "regrouped": [f"group {a} written as group {b} (scales repeated; values exact)" for a, b in regrouped],
            "scales_exact": dtype != torch.bfloat16,
            # decompressed in the scales' dtype: float32 gives sparsekit's values exactly, float16 their rounding
            "max_abs_error": max(errors.values()), "exact_quantized": sum(e == 0 for e in errors.values())}


def read_back(out: str | Path) -> dict[str, torch.Tensor]:
    """Every quantized weight of an export, decompressed by the library's own compressor, by module name
    (each module's scheme found by the library's target matching, as its loaders do)."""
    import json

    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationConfig
    from compressed_tensors.utils.match import is_match
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    out = Path(out)
    config = QuantizationConfig.model_validate(json.loads((out / "config.json").read_text())["quantization_config"])
    state = {}
    for file in sorted(out.glob("*.safetensors")):
        state.update(load_file(str(file)))
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out))
    weights = {}
    for name, module in skeleton.named_modules():
        if f"{name}.weight_packed" not in state or is_match(name, module, config.ignore or []):
            continue
        schemes = [s for s in config.config_groups.values() if is_match(name, module, s.targets)]
        if len(schemes) != 1:
            raise ExportError(f"{out}: {name} matches {len(schemes)} schemes of its quantization_config")
        local = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
        weights[name] = PackedQuantizationCompressor.decompress(local, schemes[0])["weight"]
    return weights
