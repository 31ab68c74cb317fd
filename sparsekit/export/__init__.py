"""Export a sparsekit checkpoint to the formats serving stacks read (docs/ARCHITECTURE.md §1).

    sparsekit export DIR --to compressed-tensors --out OUT      vLLM / SGLang (a model folder)
    sparsekit export DIR --to gguf --out FILE.gguf              llama.cpp, Ollama, LM Studio (one file)

`source.py` turns a checkpoint into plain projections with their codes; each target is one module with
one function `export_<target>(source, out, dtype) -> summary`. Adding a target is one module plus one
entry in `TARGETS`. Output is written under a temporary name beside `out` and renamed into place at the
end, so a refused or failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from sparsekit.errors import SparsekitError
from sparsekit.utils.io import default_mode
from sparsekit.export.source import ExportError, Source, load_source

@dataclass(frozen=True)
class Target:
    """Where a target's writer lives, what it writes and the library it needs."""

    module: str
    function: str
    folder: bool  # writes a folder (else one file)
    suffix: str  # the file name's suffix, for a file
    needs: str  # the importable library that writes the format
    extra: str  # the pip extra that installs it


TARGETS: dict[str, Target] = {
    "compressed-tensors": Target("sparsekit.export.compressed_tensors", "export_compressed_tensors", True, "",
                                 "compressed_tensors", "sparsekit[export]"),
    "gguf": Target("sparsekit.export.gguf", "export_gguf", False, ".gguf", "gguf", "sparsekit"),
}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
SUMMARY_FILE = "sparsekit_export.json"

__all__ = ["DTYPES", "ExportError", "Source", "TARGETS", "Target", "export", "load_source"]


def _target(to: str) -> tuple[Callable[..., dict], Target]:
    import importlib
    import importlib.util

    if to not in TARGETS:
        raise SparsekitError(f"unknown export target {to!r}; known: {', '.join(TARGETS)}")
    target = TARGETS[to]
    if importlib.util.find_spec(target.needs) is None:
        raise SparsekitError(f"exporting to {to} needs the {target.needs} library: pip install '{target.extra}'")
    return getattr(importlib.import_module(target.module), target.function), target


def _check_out(out: Path, folder: bool, suffix: str) -> None:
    if out.exists() and (not folder or not out.is_dir() or any(out.iterdir())):
        raise SparsekitError(f"--out {out} already exists; choose a new {'folder' if folder else 'file'} or remove it")
    if suffix and out.suffix != suffix:
        raise SparsekitError(f"--out {out}: a {suffix} file name is expected")
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise SparsekitError(f"cannot write into {parent}: permission denied")


def export(checkpoint: str | os.PathLike, to: str, out: str | os.PathLike, *, dtype: str | torch.dtype = "float16"
           ) -> dict:
    """Export sparsekit checkpoint folder `checkpoint` to target `to` at `out`; return the summary.

    Args:
        to: 'compressed-tensors' (a folder) or 'gguf' (one .gguf file).
        dtype: of the tensors that stay floating (embeddings, norms, unquantized projections) and of
            compressed-tensors' scales: float16 (default: holds sparsekit's fp16 scales exactly),
            bfloat16 or float32.
    The summary (also written as sparsekit_export.json beside a folder export) names the source, the
    target's schemes or tensor types, anything re-grouped or re-quantized and its measured error,
    and each projection's sparsity (formats that cannot declare sparsity keep pruned weights as zeros).
    """
    fn, target = _target(to)
    folder, suffix = target.folder, target.suffix
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise SparsekitError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    out = Path(out).expanduser()
    _check_out(out, folder, suffix)
    source = load_source(checkpoint)  # a target may consume it (compressed-tensors packs the model in place)
    out.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        dest = tmp
    else:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=suffix, dir=out.parent)
        os.close(fd)
        tmp = dest = Path(name)
    try:
        summary = fn(source, dest, dtype)
        summary = {"format": to, "source": str(source.path), "base_model": source.meta.get("base_model"),
                   "recipe": source.meta.get("recipe"), "dtype": str(dtype).replace("torch.", ""), **summary,
                   "sparsity": {n: round(p.sparsity, 6) for n, p in source.projections.items() if p.pattern},
                   "patterns": sorted({p.pattern for p in source.projections.values() if p.pattern})}
        if folder:
            (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
            if out.exists():
                out.rmdir()  # empty, checked above
        os.chmod(tmp, default_mode(folder))
        os.replace(tmp, out)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise
    return summary
