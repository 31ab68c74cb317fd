"""Compressed checkpoints: a Hugging Face model folder plus what sparsekit did to it.

```
DIR/config.json, model*.safetensors, tokenizer files   the model; packed projections hold their layout
                                                       buffers (codes / values, meta, scales, zeros)
DIR/masks.safetensors                                  keep-mask of every pruned module, bit-packed
DIR/sparsekit.json                                     recipe, calibration, per-module results, the
                                                       layout of every packed module, sha256 of every
                                                       tensor file
```

Everything is safetensors or JSON: nothing is unpickled on load. `load_checkpoint` checks every
tensor file against its recorded sha256 before reading it (a flipped byte is refused with an error
naming the file), rebuilds the architecture from config.json, puts a packed module (`sparsekit.nn`)
where the JSON says, and loads the state dict strictly: no calibration, no re-quantization. A folder
is written under a temporary name next to DIR and renamed into place at the end, so an interrupted or
failed save never leaves a half-written DIR.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from sparsekit.errors import SparsekitError
from sparsekit.pack.bitmask import pack_mask, unpack_mask
from sparsekit.utils.io import default_mode, sha256_file

METADATA_FILE = "sparsekit.json"
MASKS_FILE = "masks.safetensors"
FORMAT = "sparsekit-checkpoint"
FORMAT_VERSION = 3  # 3: masks.safetensors keeps its shapes under one sorted-JSON key (byte-reproducible)


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """Fail early (before any work) when `out_dir` cannot receive a checkpoint."""
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SparsekitError(f"--out {out} already exists and is not an empty folder; choose a new folder or remove it")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise SparsekitError(f"cannot write into {parent}: permission denied")
    return out


def save_checkpoint(model: torch.nn.Module, tokenizer: Any, out_dir: str | os.PathLike, metadata: dict,
                    masks: dict[str, torch.Tensor]) -> Path:
    """Write model, tokenizer, packed masks and `metadata` to `out_dir` atomically; return the path."""
    from safetensors.torch import save_file

    out = check_out_dir(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _save_model(model, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if masks:
            packed = {name: pack_mask(m.cpu()) for name, m in masks.items()}
            # One metadata key holding sorted JSON: safetensors writes the `__metadata__` map in a hash
            # order that changes from process to process, so one key per module (as written before)
            # gave two identical runs different bytes and sha256. Tensors need nothing: safetensors
            # orders them by dtype alignment and name, whatever the dict order.
            layout = {"format": "bitmask-lsb", "shapes": {name: list(m.shape) for name, m in masks.items()}}
            save_file(packed, tmp / MASKS_FILE,
                      metadata={"masks": json.dumps(layout, sort_keys=True, separators=(",", ":"))})
        files = {f.name: sha256_file(f) for f in sorted(tmp.glob("*.safetensors"))}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata, "packed": packed_records(model),
                "structure": structure_record(model), "files": files}
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.chmod(tmp, default_mode(folder=True))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _save_model(model: torch.nn.Module, folder: Path) -> None:
    """config.json (+ generation config) and the state dict as it is in memory, in `model.safetensors`.

    Not `save_pretrained`: transformers may rewrite keys on save (fused MoE experts go back to the
    per-expert legacy names) and expects the config's shapes on load, while sparsekit checkpoints hold
    packed buffers and shrunk, per-block shapes that `load_checkpoint` restores itself. Tensors that
    share storage (tied embeddings) are written once.
    """
    from safetensors.torch import save_file

    model.config.save_pretrained(folder)
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        try:
            generation.save_pretrained(folder)
        except (ValueError, OSError):  # an invalid generation config is not worth failing a checkpoint for
            pass
    state, seen = {}, set()
    for key, tensor in model.state_dict().items():
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if ident in seen:
            continue
        seen.add(ident)
        state[key] = tensor.detach().cpu().contiguous()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def read_metadata(path: str | os.PathLike) -> dict | None:
    """The sparsekit metadata of a checkpoint folder, or None for a plain model folder / name."""
    meta = Path(path).expanduser() / METADATA_FILE
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SparsekitError(f"{meta} is not readable JSON ({exc}); the checkpoint is damaged") from None
    if data.get("format") != FORMAT:
        raise SparsekitError(f"{meta} is not a sparsekit checkpoint description (format {data.get('format')!r})")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise SparsekitError(f"{meta} has format version {data['format_version']}; this sparsekit reads up to "
                             f"{FORMAT_VERSION}: upgrade sparsekit")
    return data


def load_masks(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Keep-masks of a checkpoint folder, by full module name (empty when it has none)."""
    from safetensors import safe_open

    file = Path(path).expanduser() / MASKS_FILE
    if not file.is_file():
        return {}
    out = {}
    with safe_open(str(file), framework="pt") as fh:
        meta = fh.metadata() or {}
        if "masks" in meta:  # one key: {"format": ..., "shapes": {name: [rows, cols]}} (see save_checkpoint)
            layout = json.loads(meta["masks"])
            if layout.get("format") != "bitmask-lsb":
                raise SparsekitError(f"{file}: masks of format {layout.get('format')!r}; this sparsekit reads "
                                     "bitmask-lsb: upgrade sparsekit")
            shapes = {name: tuple(shape) for name, shape in layout["shapes"].items()}
        else:  # written before: one key per module, its shape as "rows,cols"
            shapes = {name: tuple(int(s) for s in meta[name].split(",")) for name in fh.keys()}
        for name in fh.keys():
            out[name] = unpack_mask(fh.get_tensor(name), shapes[name])
    return out


def packed_records(model: torch.nn.Module) -> dict[str, dict]:
    """What `load_checkpoint` needs to rebuild each packed module: layout kind, shape, grouping."""
    from sparsekit.nn.packed import PackedLinear

    # group_size is always written (None where a layout has none): readers of format 2 expect the key
    return {name: {"kind": m.kind, "shape": [m.out_features, m.in_features], "group_size": None, **m.layout_attrs,
                   "bits_per_weight": m.layout().bits_per_weight}
            for name, m in model.named_modules() if isinstance(m, PackedLinear)}


def structure_record(model: torch.nn.Module) -> dict:
    """Structural edits `load_checkpoint` must redo before loading the state dict (removed sublayers;
    removed blocks need nothing: config.json already has the new layer count)."""
    from sparsekit.errors import UnsupportedArchitectureError
    from sparsekit.models.adapters import get_adapter
    from sparsekit.models.surgery import moe_structure, projection_biases, projection_shapes, removed_sublayers

    try:
        adapter = get_adapter(model)
    except UnsupportedArchitectureError:
        return {}
    return {"removed_sublayers": removed_sublayers(adapter), "shapes": projection_shapes(adapter),
            "biases": projection_biases(adapter), "experts": moe_structure(adapter)}


def verify_files(path: Path, meta: dict) -> None:
    """Refuse a checkpoint whose tensor files are missing or differ from the recorded sha256."""
    for name, digest in meta.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise SparsekitError(f"{file} is missing: the checkpoint is incomplete")
        if sha256_file(file) != digest:
            raise SparsekitError(f"{file} does not match the sha256 recorded in {METADATA_FILE}: the file is corrupted "
                                 "or was modified; re-create the checkpoint with `sparsekit compress`")


def load_checkpoint(path: str | os.PathLike, dtype: torch.dtype = torch.float32, backend: str = "auto"):
    """`(model, tokenizer)` of a sparsekit checkpoint folder, on the CPU, packed modules in place; tokenizer
    None where the checkpoint was saved without one.

    Tensors of unpacked modules take `dtype`; packed tensors (2:4 values, codes, metadata, scales) keep
    their stored types, so the model holds exactly the stored bytes. Checkpoints without packed modules
    are plain model folders.
    """
    from accelerate import init_empty_weights
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from sparsekit.nn.packed import PackedLinear
    from sparsekit.pack import LAYOUTS

    path = Path(path).expanduser()
    meta = read_metadata(path)
    if meta is None:
        raise SparsekitError(f"{path} is not a sparsekit checkpoint (no {METADATA_FILE})")
    verify_files(path, meta)
    # a model saved without its tokenizer (save(model, out) from Python) has no tokenizer files: AutoTokenizer would
    # build the config's tokenizer class from nothing and fail, so such a checkpoint loads with tokenizer None
    tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").is_file() else None
    packed = meta.get("packed") or {}
    structure = meta.get("structure") or {}
    skipped = structure.get("removed_sublayers") or []
    if not packed and not structure:  # a checkpoint of format 1: a plain model folder
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype), tokenizer
    state: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("model*.safetensors")):
        state.update(load_file(str(file)))
    config = AutoConfig.from_pretrained(path)
    # the skeleton's parameters on the meta device: a randomly initialised full-precision model would cost its
    # whole size in memory and init time before the packed modules replace it (a 165 MiB int4 SmolLM2 took
    # 900 MiB to load that way); buffers stay real (rotary frequencies are computed, not stored)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if structure:  # the architecture as it was saved: removed sublayers, per-block widths, then the state dict
        from sparsekit.models.adapters import get_adapter
        from sparsekit.models.surgery import apply_shapes, drop_sublayer, num_experts, prune_experts

        adapter = get_adapter(model)
        for block, kind in skipped:
            drop_sublayer(adapter, int(block), kind)
        apply_shapes(adapter, structure.get("shapes") or {}, structure.get("biases"))
        for block, count in (structure.get("experts") or {}).items():  # the first `count` slots; values load next
            if count < num_experts(adapter, int(block)):
                prune_experts(adapter, int(block), torch.arange(count))
    for name, rec in packed.items():
        cls = LAYOUTS.get(rec["kind"])
        if cls is None:
            raise SparsekitError(f"{path}: packed module {name} has layout {rec['kind']!r}, which this sparsekit does "
                                 f"not know (known: {', '.join(LAYOUTS)}); upgrade sparsekit or register the layout")
        tensors = {f: state.pop(f"{name}.{f}") for f in cls.tensor_fields() if f"{name}.{f}" in state}
        try:
            layout = cls.from_tensors(rec["shape"], tensors, {a: rec.get(a) for a in cls.ATTRS}, name)
        except SparsekitError as exc:
            raise SparsekitError(f"{path}: {exc} in its tensor files") from None
        bias = state.pop(f"{name}.bias", None)
        module = PackedLinear(layout, None if bias is None else bias.to(dtype), backend)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, module)
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    result = model.load_state_dict(state, strict=False, assign=True)  # assign: the meta parameters take the tensors
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [k for k in result.missing_keys  # packed modules were built from their tensors above
               if k not in tied and k.rpartition(".")[0] not in packed]
    if missing or result.unexpected_keys:
        raise SparsekitError(f"{path}: the tensor files do not fit the architecture (missing {missing[:3]}, "
                             f"unexpected {result.unexpected_keys[:3]}); the checkpoint is damaged")
    model.tie_weights()
    empty = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if empty:
        raise SparsekitError(f"{path}: no tensor in the files for {empty[:3]}; the checkpoint is damaged")
    return model.eval(), tokenizer
