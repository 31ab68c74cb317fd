"""The public verbs. Each takes a model (object or name) and plain options, and returns plain data."""

from __future__ import annotations

import copy
import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from sparsekit.calib.engine import CalibSettings
from sparsekit.checkpoint import load_masks, read_metadata, save_checkpoint
from sparsekit.data.calibration import calibration_texts, calibration_windows, packed_windows
from sparsekit.data.datasets import perplexity_set
from sparsekit.errors import SparsekitError
from sparsekit.eval.perplexity import perplexity
from sparsekit.eval.size import (compressed_bytes, lm_head_precision, packed_bits_per_weight, projection_sparsity,
                                weight_bytes)
from sparsekit.models.adapters import get_adapter
from sparsekit.models.loader import load_model, require_tokenizer
from sparsekit.nn.dense import use_dense_kernels
from sparsekit.nn.packed import set_backend
from sparsekit.prune.patterns import masks_sparsity
from sparsekit.recipe import STRUCTURED_STEPS, Heal, Recipe, Reconstruct, load_recipe
from sparsekit.steps.records import PruneRecord, QuantizeRecord, StepRecord, records_from_dicts
from sparsekit.utils.device import resolve_device, resolve_dtype
from sparsekit.utils.env import device_name, versions
from sparsekit.utils.pages import place_if_asked

#: Keys of every report (docs/ARCHITECTURE.md §8); a value that was not measured is None.
REPORT_KEYS = ("model", "recipe", "ppl", "tokens", "tasks", "sparsity", "bytes", "latency_ms", "tokens_per_s",
               "peak_mem_bytes", "joules_per_token", "device", "versions")


def _model_name(model: torch.nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Compressed:
    """What `compress` returns: the modified model and everything `save` writes next to it."""

    model: torch.nn.Module
    tokenizer: Any
    recipe: Recipe
    base_model: str
    calibration: dict | None
    steps: list[StepRecord] = field(default_factory=list)  # one typed record per step (sparsekit.steps.records)
    masks: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    storage: dict[str, float] = field(default_factory=dict)  # module -> packed bits per weight
    qtensors: dict[str, Any] = field(default_factory=dict, repr=False)  # module -> QTensor (codes + scales)
    packed: dict[str, str] = field(default_factory=dict)  # after convert(): module -> layout or why it stayed dense

    @property
    def sparsity(self) -> float:
        """Fraction of the pruned modules' weights removed by the masks."""
        return masks_sparsity(self.masks)

    def metadata(self) -> dict:
        return {"base_model": self.base_model, "recipe": self.recipe.to_list(), "calibration": self.calibration,
                "sparsity": self.sparsity, "steps": [st.to_dict() for st in self.steps],
                "storage_bits_per_weight": self.storage,
                "versions": versions(), "date": _now()}


def _carried_masks(folder: Path, recipe: Recipe) -> dict[str, torch.Tensor]:
    """The keep-masks of a checkpoint a recipe continues from: later quantize (GPTQ), heal and reconstruct
    steps keep its pruned weights at zero, a later prune step removes more on top, and the result's
    checkpoint carries them on."""
    masks = load_masks(folder)
    shaping = [step.NAME for step in recipe.steps if isinstance(step, STRUCTURED_STEPS)]
    if masks and shaping:
        raise SparsekitError(f"compress: {folder} holds pruned weights and the recipe's {shaping[0]} step changes the "
                             "shapes of the masked modules; run structured steps on the dense model first")
    return masks


def compress(model: str | os.PathLike | torch.nn.Module, recipe: Any, tokenizer=None, *, calib: str = "c4",
             nsamples: int = 128, seqlen: int = 512, seed: int = 0, device: str | torch.device = "auto",
             dtype: str | torch.dtype = "auto", data_dir: str | os.PathLike | None = None,
             progress: bool = True, calib_batch_size: int = 8, calib_dtype: str = "float32") -> Compressed:
    """Apply every step of `recipe` to `model` (in place) and return the result.

    Args:
        model: a loaded causal LM (pass its `tokenizer`) or anything `load_model` accepts; a name is
            loaded on the CPU and its blocks visit `device` one at a time.
        recipe: a `Recipe`, a list of step dicts, a YAML file / text, or a built-in name.
        calib, nsamples, seqlen, seed: calibration windows (docs/ARCHITECTURE.md §9: c4, 128 x 512, seed 0).
        device: where blocks are calibrated ('auto': CUDA when visible).
        dtype: of a model loaded by name ('auto': fp32 for CPU calibration, fp16 for CUDA).
        calib_batch_size, calib_dtype: windows per calibration forward and the forwards' precision
            ('float32', 'bfloat16' or 'auto': bf16 where the device has it natively) in prune and quantize
            steps; statistics stay fp32 (`sparsekit.calib.CalibSettings`). Both land in the calibration
            record.
    """
    from sparsekit.steps.run import StepState, check_step_shapes, run_steps

    recipe = load_recipe(recipe)
    compute = resolve_device(device)
    settings = CalibSettings(calib_batch_size, calib_dtype)
    needs_data = any(getattr(step, "needs_data", False) for step in recipe.steps)
    if isinstance(model, torch.nn.Module) and tokenizer is None and needs_data:
        raise ValueError("compress(model_object, recipe) with calibration needs the model's tokenizer: "
                         "compress(model, recipe, tokenizer)")
    name = _model_name(model) if isinstance(model, torch.nn.Module) else str(model)
    texts = calibration_texts(calib, data_dir) if needs_data else None  # fail on missing data before loading
    carried: dict[str, torch.Tensor] = {}
    if not isinstance(model, torch.nn.Module):
        if (Path(model) / "sparsekit.json").is_file():  # a compressed checkpoint: what it pruned stays pruned
            carried = _carried_masks(Path(model), recipe)
        source = model
        model, tokenizer = load_model(model, dtype=resolve_dtype(dtype, compute), device="cpu")
        if needs_data:
            require_tokenizer(tokenizer, source, "calibration")
    ids = None
    calibration = None
    if needs_data:
        ids = calibration_windows(tokenizer, calib, nsamples=nsamples, seqlen=seqlen, seed=seed, texts=texts)
        calibration = {"source": calib, "nsamples": nsamples, "seqlen": seqlen, "seed": seed,
                       **settings.record(compute)}
    adapter = get_adapter(model)
    for step in recipe.steps:  # every shape constraint of every step, before any step changes a weight
        check_step_shapes(adapter, step)  # (structured steps check theirs when they run: they change shapes)
    state = StepState(model, adapter, ids, compute, progress, settings, masks=carried)
    if any((isinstance(step, Heal) and step.teacher is None) or isinstance(step, Reconstruct)
           for step in recipe.steps):
        state.teacher = copy.deepcopy(model)  # the model as it entered the recipe
    if any(isinstance(step, Heal) for step in recipe.steps):
        state.windows = lambda n, length, s, packed=False: (packed_windows if packed else calibration_windows)(
            tokenizer, calib, nsamples=n, seqlen=length, seed=s, texts=texts)
    state = run_steps(list(recipe.steps), state)
    state.teacher = None
    result = Compressed(model, tokenizer, recipe, name, calibration, steps=state.records, masks=state.masks,
                        qtensors=state.qtensors)
    result.storage = storage_bits(adapter, result.steps, result.masks)
    return result


def convert(model: str | os.PathLike | torch.nn.Module, recipe: Any, tokenizer=None, *, backend: str = "auto",
            packed_dtype: torch.dtype | None = None, order: str = "auto", **compress_options: Any) -> Compressed:
    """Run `recipe` on `model` (see `compress`) and swap every compressed projection that has a packed
    layout for a `sparsekit.nn.PackedLinear` (2:4 -> semi24, int4 / MXFP4 -> int4 / mxfp4, 2:4 + int4 ->
    int4_semi24; the highest-priority layout that fits). Everything else is untouched; `result.packed` says, per compressed
    module, which layout it got or why it stayed dense. `generate()` keeps working.

    Args:
        backend: kernel choice of the new modules ('auto' | 'triton' | 'reference' | 'cuda').
        packed_dtype: value dtype of 2:4 layouts (e.g. torch.float16 for GPU kernels; default: the weight's).
        order: 'auto' | 'mma' | 'plain': 2:4 layouts in the sparse tensor cores' register order (read by
            the CUDA kernels; 'auto' when sparsekit._C is built and the model is on a GPU) or plain.
        compress_options: calib, nsamples, seqlen, seed, device, dtype, data_dir, progress.
    """
    from sparsekit.steps.convert import pack_modules

    result = compress(model, recipe, tokenizer, **compress_options)
    result.packed = pack_modules(result.model, result.masks, result.qtensors, backend=backend, dtype=packed_dtype,
                                 order=order)
    use_dense_kernels(result.model, "head")  # an fp32 / bf16 LM head on the CPU: sparsekit's GEMV (sparsekit.nn.dense)
    return result


def storage_bits(adapter, steps: list[StepRecord | dict], masks: dict[str, torch.Tensor],
                 dense_bits: int | None = None) -> dict[str, float]:
    """Bits per weight of every compressed projection once packed (format, scales, sparsity metadata).

    `steps`: the step records (`Compressed.steps`, or a checkpoint's stored "steps" dicts).
    Unquantized (pruned-only) projections count at their dtype's width, or `dense_bits` (e.g. 16).
    """
    pattern: dict[str, str] = {}
    quant = {}
    for st in records_from_dicts(steps):
        if isinstance(st, PruneRecord):
            for name, mod in st.modules.items():
                mine = mod.pattern or "unstructured"
                prev = pattern.get(name)  # two prune steps with different patterns: count it unstructured
                pattern[name] = mine if prev in (None, mine) else "unstructured"
        elif isinstance(st, QuantizeRecord):
            quant.update(st.modules)
    out = {}
    for name in sorted(set(pattern) | set(quant)):
        try:
            weight = adapter.model.get_submodule(name).weight
        except AttributeError:  # fused MoE expert parameters (dense, no layout) or a packed module (its own bytes)
            continue
        q = quant.get(name)
        element = q.element_bits if q else (dense_bits or weight.element_size() * 8)
        overhead = q.scale_bits_per_weight if q else 0.0
        keep = masks.get(name)
        sparsity = 1.0 - float(keep.float().mean()) if keep is not None else 0.0
        out[name] = packed_bits_per_weight(tuple(weight.shape), element_bits=element, overhead_bits=overhead,
                                           sparsity=sparsity, pattern=pattern.get(name, "unstructured"))
    return out


def save(obj: Compressed | torch.nn.Module, out_dir: str | os.PathLike, tokenizer=None, **extra: Any) -> str:
    """Write a compressed checkpoint (see `sparsekit.checkpoint`) of a `compress`/`convert` result or of a
    model (pass its `tokenizer`); packed modules are stored packed. `extra` keys go into its metadata."""
    if isinstance(obj, Compressed):
        return str(save_checkpoint(obj.model, obj.tokenizer, out_dir, {**obj.metadata(), **extra}, obj.masks))
    if not isinstance(obj, torch.nn.Module):
        raise TypeError(f"save() takes what compress()/convert() return or a model, got {type(obj).__name__}")
    meta = {"base_model": _model_name(obj), "versions": versions(), "date": _now(), **extra}
    return str(save_checkpoint(obj, tokenizer, out_dir, meta, {}))


def load(path: str | os.PathLike, *, dtype: str | torch.dtype = "auto", device: str | torch.device = "cpu",
         backend: str = "auto"):
    """`(model, tokenizer)` of a checkpoint written by `save` / `sparsekit compress`: packed modules are
    rebuilt from their stored layouts (no calibration), every tensor file is checked against its sha256."""
    from sparsekit.checkpoint import load_checkpoint

    dev = resolve_device(device)
    model, tokenizer = load_checkpoint(path, resolve_dtype(dtype, dev), backend)
    model = model.to(dev)
    place_if_asked(model)  # SPARSEKIT_HUGE_PAGES=1: weights on 2 MiB pages (sparsekit.utils.pages)
    use_dense_kernels(model, "head")  # an fp32 / bf16 LM head on the CPU: sparsekit's GEMV (sparsekit.nn.dense)
    return model, tokenizer


def evaluate(model: str | os.PathLike | torch.nn.Module, tokenizer=None, *, ppl: Sequence[str] = ("wikitext2",),
             tasks: Sequence[str] = (), seqlen: int = 2048, limit: int | None = None, batch_size: int = 1,
             device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
             data_dir: str | os.PathLike | None = None, progress: bool = True,
             storage: dict[str, float] | None = None, backend: str = "auto") -> dict:
    """Evaluate a model and return one report with the keys of `REPORT_KEYS` (plus `protocol`, `date`).

    Args:
        model: a loaded causal LM (then pass its `tokenizer`) or anything `load_model` accepts.
        ppl: perplexity data sets ('wikitext2', 'c4').
        tasks: zero-shot tasks through lm-evaluation-harness (`sparsekit.eval.tasks.TASKS`); `limit` then
            also means the first N examples of each task.
        seqlen, limit, batch_size: the perplexity protocol (see `sparsekit.eval.perplexity`).
        device, dtype: used only when `model` is a name; a model object is evaluated where it is.
        data_dir: folder with the data sets (default: $SPARSEKIT_DATA).
        storage: packed bits per weight of compressed modules (`Compressed.storage`), so that `bytes`
            is the true size; a checkpoint folder brings its own.
        backend: kernel of the packed modules (`sparsekit.nn.set_backend`; e.g. the opt-in 'cpu_a8').
    """
    sets = [perplexity_set(name) for name in ppl]
    texts = {s.name: s.text(data_dir) for s in sets}  # fail on missing data before loading a model
    if tasks:
        from sparsekit.eval.tasks import task_file

        for task in tasks:
            task_file(task, data_dir)
    if isinstance(model, torch.nn.Module):
        if tokenizer is None:
            raise ValueError("evaluate(model_object) needs the model's tokenizer: evaluate(model, tokenizer, ...)")
        name = _model_name(model)
        checkpoint = None
    else:
        name = str(model)
        checkpoint = read_metadata(name) if os.path.isdir(os.path.expanduser(name)) else None
        model, tokenizer = load_model(model, dtype=dtype, device=resolve_device(device))
        require_tokenizer(tokenizer, name, "evaluation")
    if backend != "auto":
        set_backend(model, backend)
    report: dict = {key: None for key in REPORT_KEYS}
    report.update(model=name, ppl={}, tokens={}, tasks={}, backend=backend)
    if checkpoint is not None:
        report["recipe"] = checkpoint.get("recipe")
        report["base_model"] = checkpoint.get("base_model")
    protocol: dict = {"seqlen": seqlen, "limit": limit, "batch_size": batch_size, "ppl": {}}
    for s in sets:
        result = perplexity(model, tokenizer, texts[s.name], seqlen=seqlen, batch_size=batch_size, limit=limit,
                            max_windows=s.max_windows, progress=progress, desc=f"ppl {s.name}")
        report["ppl"][s.name] = result.ppl
        report["tokens"][s.name] = result.tokens
        protocol["ppl"][s.name] = {"windows": result.windows, "nll": result.nll, "data": s.note}
    # a checkpoint knows its masks; counting zeros would also count weights that quantization rounded to 0
    if tasks:
        from sparsekit.eval.harness import run_tasks

        report["tasks"] = run_tasks(model, tokenizer, list(tasks), limit=limit, data_dir=data_dir, progress=progress)
        protocol["tasks"] = {"limit": limit, "harness": "lm-evaluation-harness", "prompts": "official (see "
                             "sparsekit/eval/tasks.py)"}
    report["sparsity"] = (float(checkpoint.get("sparsity") or 0.0) if checkpoint is not None
                          else projection_sparsity(get_adapter(model)))
    if storage is None and checkpoint is not None:
        storage = checkpoint.get("storage_bits_per_weight")
    report["bytes"] = compressed_bytes(model, storage) if storage else weight_bytes(model)
    dev = next(model.parameters()).device
    report["device"] = device_name(dev)
    report["versions"] = versions()
    report["dtype"] = str(next(model.parameters()).dtype).replace("torch.", "")
    report["protocol"] = protocol
    report["date"] = _now()
    return report


def benchmark(model: str | os.PathLike | torch.nn.Module, *, prefill: int = 2048, decode: int = 128, batch: int = 1,
          repeats: int = 5, warmup: int = 1, compile: bool = False, device: str | torch.device = "auto",
          dtype: str | torch.dtype = "auto", backend: str = "auto") -> dict:
    """Speed, memory and energy of a model (see `sparsekit.bench.model`) in one report with the keys of
    `REPORT_KEYS`: `latency_ms` (prefill, median), `tokens_per_s` (decode), `peak_mem_bytes`,
    `joules_per_token` (None on the CPU), `bytes` (true weight storage), plus `bench` (spreads, settings)
    and `lm_head` (what the LM head runs in: `sparsekit.eval.size.lm_head_precision`).

    Args:
        model: a loaded model (benchmarked where it is) or anything `load_model` accepts (checkpoints too).
        backend: kernel of the packed modules (`sparsekit.nn.set_backend`; e.g. the opt-in 'cpu_a8').
    """
    from sparsekit.bench.model import benchmark_model

    checkpoint = None
    if isinstance(model, torch.nn.Module):
        name = _model_name(model)
    else:
        name = str(model)
        checkpoint = read_metadata(name) if os.path.isdir(os.path.expanduser(name)) else None
        model, _ = load_model(model, dtype=dtype, device=resolve_device(device))
    if backend != "auto":
        set_backend(model, backend)
    result = benchmark_model(model, prefill=prefill, decode=decode, batch=batch, repeats=repeats, warmup=warmup,
                             compile=compile)
    report: dict = {key: None for key in REPORT_KEYS}
    storage = checkpoint.get("storage_bits_per_weight") if checkpoint else None
    dev = next(model.parameters()).device
    report.update(model=name, recipe=checkpoint.get("recipe") if checkpoint else None, ppl={}, tokens={}, tasks={},
                  bytes=compressed_bytes(model, storage) if storage else weight_bytes(model),
                  latency_ms=result["prefill"]["median_ms"], tokens_per_s=result["decode"]["tokens_per_s"],
                  peak_mem_bytes=result["peak_mem_bytes"], joules_per_token=result["joules_per_token"],
                  device=device_name(dev), versions=versions(), bench=result,
                  dtype=str(next(model.parameters()).dtype).replace("torch.", ""), date=_now(), backend=backend,
                  lm_head=lm_head_precision(model))
    return report
