"""Compressed checkpoints: a Hugging Face model folder plus what sparsekit did to it.

```
DIR/config.json, model.safetensors, tokenizer files   the model (pruned weights are exact zeros)
DIR/masks.safetensors                                  keep-mask of every pruned module, bit-packed
DIR/sparsekit.json                                     recipe, calibration, per-module results
```

Everything is safetensors or JSON: nothing is unpickled on load. A folder is written under a
temporary name next to DIR and renamed into place at the end, so an interrupted or failed save never
leaves a half-written DIR.
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

METADATA_FILE = "sparsekit.json"
MASKS_FILE = "masks.safetensors"
FORMAT = "sparsekit-checkpoint"
FORMAT_VERSION = 1


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
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if masks:
            packed = {name: pack_mask(m.cpu()) for name, m in masks.items()}
            shapes = {name: ",".join(str(s) for s in m.shape) for name, m in masks.items()}
            save_file(packed, tmp / MASKS_FILE, metadata={"format": "bitmask-lsb", **shapes})
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


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
        for name in fh.keys():
            shape = tuple(int(s) for s in meta[name].split(","))
            out[name] = unpack_mask(fh.get_tensor(name), shape)
    return out
