"""The public verbs. Each takes a model (object or name) and plain options, and returns plain data."""

from __future__ import annotations

import datetime as _dt
import os
from typing import Sequence

import torch

from sparsekit.data.datasets import perplexity_set
from sparsekit.eval.perplexity import perplexity
from sparsekit.eval.size import projection_sparsity, weight_bytes
from sparsekit.models.adapters import get_adapter
from sparsekit.models.loader import load_model
from sparsekit.utils.device import resolve_device
from sparsekit.utils.env import device_name, versions

#: Keys of every report (DESIGN.md §8); a value that was not measured is None.
REPORT_KEYS = ("model", "recipe", "ppl", "tokens", "tasks", "sparsity", "bytes", "latency_ms", "tokens_per_s",
               "peak_mem_bytes", "joules_per_token", "device", "versions")


def _model_name(model: torch.nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)


def evaluate(model: str | os.PathLike | torch.nn.Module, tokenizer=None, *, ppl: Sequence[str] = ("wikitext2",),
             seqlen: int = 2048, limit: int | None = None, batch_size: int = 1, device: str | torch.device = "auto",
             dtype: str | torch.dtype = "auto", data_dir: str | os.PathLike | None = None,
             progress: bool = True) -> dict:
    """Evaluate a model and return one report with the keys of `REPORT_KEYS` (plus `protocol`, `date`).

    Args:
        model: a loaded causal LM (then pass its `tokenizer`) or anything `load_model` accepts.
        ppl: perplexity data sets ('wikitext2', 'c4').
        seqlen, limit, batch_size: the perplexity protocol (see `sparsekit.eval.perplexity`).
        device, dtype: used only when `model` is a name; a model object is evaluated where it is.
        data_dir: folder with the data sets (default: $SPARSEKIT_DATA).
    """
    sets = [perplexity_set(name) for name in ppl]
    texts = {s.name: s.text(data_dir) for s in sets}  # fail on missing data before loading a model
    if isinstance(model, torch.nn.Module):
        if tokenizer is None:
            raise ValueError("evaluate(model_object) needs the model's tokenizer: evaluate(model, tokenizer, ...)")
        name = _model_name(model)
    else:
        name = str(model)
        model, tokenizer = load_model(model, dtype=dtype, device=resolve_device(device))
    report: dict = {key: None for key in REPORT_KEYS}
    report.update(model=name, ppl={}, tokens={}, tasks={})
    protocol: dict = {"seqlen": seqlen, "limit": limit, "batch_size": batch_size, "ppl": {}}
    for s in sets:
        result = perplexity(model, tokenizer, texts[s.name], seqlen=seqlen, batch_size=batch_size, limit=limit,
                            max_windows=s.max_windows, progress=progress, desc=f"ppl {s.name}")
        report["ppl"][s.name] = result.ppl
        report["tokens"][s.name] = result.tokens
        protocol["ppl"][s.name] = {"windows": result.windows, "nll": result.nll, "data": s.note}
    report["sparsity"] = projection_sparsity(get_adapter(model))
    report["bytes"] = weight_bytes(model)
    dev = next(model.parameters()).device
    report["device"] = device_name(dev)
    report["versions"] = versions()
    report["dtype"] = str(next(model.parameters()).dtype).replace("torch.", "")
    report["protocol"] = protocol
    report["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return report
