"""Layer-wise calibration: run a model one decoder block at a time (docs/ARCHITECTURE.md §2).

1. **Capture.** One forward pass per calibration batch with every block's `forward` replaced by a
   recorder: the recorder of block 0 keeps the hidden states entering the stack, and every recorder
   keeps the keyword arguments its block receives (attention mask, position embeddings, ...).
   Keeping them *per block* matters: models with sliding-window layers (Gemma 2/3) give each layer
   type its own mask and rotary tables. Identical tensors are stored once (a 2048-token fp32 mask
   is 16 MiB), and the pass stops at the last block, so the LM head never runs.
2. **Per block.** Move the block to the compute device; run every batch through it with forward
   pre-hooks on its projections accumulating `LinearStats` (sum x^2, token count, optionally X^T X,
   all fp32); hand a `BlockContext` to the caller, who may modify the block (prune, quantize, ...);
   then re-run the *modified* block so that block i+1 is calibrated on what block i now produces
   (SparseGPT/Wanda's sequential mode). Move the block back and drop its inputs.

Only one block's activations (its inputs and outputs) are alive at a time, and the model itself may
stay on the CPU while each block visits the accelerator: this is how a model larger than the GPU is
compressed.

MoE experts stored as fused 3-D parameters (transformers >= 5) are not `nn.Linear`, so they get no
per-expert statistics here; their router and attention projections do.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from sparsekit.calib.stats import LinearStats, accumulate
from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import Adapter, get_adapter
from sparsekit.utils.device import resolve_device
from sparsekit.utils.env import cpu_flags

log = logging.getLogger(__name__)


FORWARD_DTYPES = ("float32", "bfloat16", "auto")


@dataclass(frozen=True)
class CalibSettings:
    """How the calibration forwards run (what they compute is the recipe's business).

    batch_size: calibration windows per block forward. Windows have equal length, so batching changes
        nothing but the order of fp32 sums, and fewer, larger calls amortise a small model's per-call
        overhead.
    forward_dtype: 'float32', 'bfloat16' (the block forwards under bf16 autocast: the projections and
        attention run in bf16 with fp32 accumulation, norms, residual adds and every statistic stay fp32)
        or 'auto' (bf16 where the device computes it natively: a CUDA GPU with bf16, a CPU with
        AVX512_BF16 or AMX; fp32 elsewhere, where bf16 would be emulated and slower). The inputs the
        statistics see are then bf16-rounded, so masks can differ from an fp32 run: the pruned
        model's perplexity, not its masks, is what stays within calibration noise (README, issue 18).
    """

    batch_size: int = 8
    forward_dtype: str = "float32"

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise SparsekitError(f"calibration batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.forward_dtype not in FORWARD_DTYPES:
            raise SparsekitError(f"calibration forward_dtype must be one of {', '.join(FORWARD_DTYPES)}, "
                                 f"got {self.forward_dtype!r}")

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype of the block forwards on `device` (None: plain fp32)."""
        if self.forward_dtype == "float32":
            return None
        if self.forward_dtype == "auto" and not native_bf16(device):
            return None
        return torch.bfloat16

    def record(self, device: torch.device) -> dict[str, Any]:
        """What a checkpoint's calibration record says about the forwards (the resolved dtype)."""
        dtype = self.autocast_dtype(device)
        return {"batch_size": self.batch_size, "forward_dtype": "bfloat16" if dtype else "float32"}


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 matmuls in hardware."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and _cpu_has_bf16()


def _cpu_has_bf16() -> bool:
    # not Linux: no flags, so no way to tell here, so no bf16
    return not cpu_flags().isdisjoint({"avx512_bf16", "amx_bf16"})


class _StopForward(Exception):
    """Raised by the last block's recorder: everything after the blocks is not needed."""


@dataclass
class BlockContext:
    """What a caller sees of block `index` during calibration.

    `stats` maps block-relative projection names ('self_attn.q_proj', ...) to their input statistics.
    `inputs` are the hidden states entering the block (one tensor per calibration batch) and
    `outputs` what the block produced *before* the caller touched it.
    """

    index: int
    name: str
    block: nn.Module
    adapter: Adapter
    stats: dict[str, LinearStats]
    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]
    device: torch.device
    _kwargs: list[dict[str, Any]] = field(repr=False, default_factory=list)
    autocast: torch.dtype | None = None  # the forwards' autocast dtype (CalibSettings.forward_dtype)
    dense_outputs: list[torch.Tensor] | None = None  # the unmodified model's hidden states here (dense_stream)

    def linears(self) -> dict[str, nn.Linear]:
        """The block's projections by block-relative name."""
        return self.adapter.linears(self.block)

    @torch.no_grad()
    def forward(self) -> list[torch.Tensor]:
        """Run the block (as it is now) on its calibration inputs, e.g. to measure reconstruction error."""
        return [self.forward_batch(b) for b in range(len(self.inputs))]

    def forward_batch(self, b: int) -> torch.Tensor:
        """The block's output on calibration batch `b` (with gradients if enabled: reconstruction)."""
        with autocast(self.device, self.autocast):
            return block_output(self.block(self.inputs[b], **self._kwargs[b]))


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device`'s type, or nothing when `dtype` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def block_output(out: Any) -> torch.Tensor:
    """Decoder blocks return a tensor (transformers >= 5) or a tuple whose first item is the tensor."""
    return out[0] if isinstance(out, (tuple, list)) else out


class _Interner:
    """Stores each distinct tensor once: equal masks / rotary tables of different batches share memory."""

    def __init__(self) -> None:
        self.pool: list[torch.Tensor] = []

    def __call__(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            for t in self.pool:
                if t is obj or (t.shape == obj.shape and t.dtype == obj.dtype and t.device == obj.device
                                and torch.equal(t, obj)):
                    return t
            self.pool.append(obj)
            return obj
        if isinstance(obj, tuple):
            return tuple(self(o) for o in obj)
        if isinstance(obj, list):
            return [self(o) for o in obj]
        if isinstance(obj, dict):
            return {k: self(v) for k, v in obj.items()}
        return obj


def _to_device(obj: Any, device: torch.device, memo: dict[int, torch.Tensor]) -> Any:
    """Move tensors inside nested containers, moving each distinct tensor once."""
    if isinstance(obj, torch.Tensor):
        if id(obj) not in memo:
            memo[id(obj)] = obj.to(device)
        return memo[id(obj)]
    if isinstance(obj, tuple):
        return tuple(_to_device(o, device, memo) for o in obj)
    if isinstance(obj, list):
        return [_to_device(o, device, memo) for o in obj]
    if isinstance(obj, dict):
        return {k: _to_device(v, device, memo) for k, v in obj.items()}
    return obj


def module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


class LayerwiseCalibrator:
    """Runs a causal LM block by block over calibration batches.

    Args:
        model: a Hugging Face causal LM (any architecture the adapters know), on any device.
        device: where each block runs ('auto': CUDA when visible). The model may stay on the CPU.
        hessian: also accumulate X^T X per projection (SparseGPT, GPTQ).
        stats: accumulate input statistics at all (False: inputs/outputs only, e.g. block scores).
        linears: block-relative projection names to track (default: every projection of the adapter).
        sequential: feed block i+1 with the outputs of the *modified* block i (default, as in
            SparseGPT/Wanda); False feeds the unmodified outputs.
        settings: batch size and precision of the forwards (`CalibSettings`; default: 8 windows, fp32).
        progress: show a progress bar over blocks.

    Use `run(input_ids, on_block)` with a callback, or iterate `blocks(input_ids)` and modify each
    `ctx.block` in the loop body.
    """

    def __init__(self, model: nn.Module, *, adapter: Adapter | None = None, device: str | torch.device = "auto",
                 hessian: bool = False, stats: bool = True, linears: Iterable[str] | None = None,
                 sequential: bool = True, settings: CalibSettings | None = None, progress: bool = True):
        self.model = model
        self.adapter = adapter or get_adapter(model)
        self.device = resolve_device(device)
        self.hessian = hessian
        self.collect_stats = stats or hessian
        known = list(self.adapter.spec.projections)
        self.linear_names = known if linears is None else list(linears)
        unknown = sorted(set(self.linear_names) - set(known))
        if unknown:
            raise SparsekitError(f"unknown projections {unknown} for the '{self.adapter.spec.name}' layout; "
                                 f"known: {sorted(known)}")
        self.sequential = sequential
        self.settings = settings or CalibSettings()
        self.batch_size = self.settings.batch_size
        self.autocast = self.settings.autocast_dtype(self.device)
        self.progress = progress

    # -- capture ---------------------------------------------------------------------------------
    @torch.no_grad()
    def capture(self, input_ids: torch.Tensor) -> tuple[list[torch.Tensor], list[list[dict[str, Any]]]]:
        """Hidden states entering block 0 (one per batch) and, per block, the kwargs of each batch."""
        if input_ids.dim() != 2 or input_ids.numel() == 0:
            raise SparsekitError(f"calibration input_ids must be a non-empty [nsamples, seqlen] tensor, "
                                 f"got shape {tuple(input_ids.shape)}")
        blocks = self.adapter.blocks
        n = len(blocks)
        intern = _Interner()
        hidden: list[torch.Tensor] = []
        kwargs: list[list[dict[str, Any]]] = [[] for _ in range(n)]

        def recorder(i: int) -> Callable[..., Any]:
            def forward(*args: Any, **kw: Any) -> Any:
                x = args[0] if args else kw.pop("hidden_states")
                if len(args) > 1:
                    raise SparsekitError(f"block {i} was called with {len(args)} positional arguments; sparsekit "
                                         "expects hidden_states positionally and everything else by keyword")
                kw.pop("past_key_values", None)  # no cache during calibration
                kw.pop("past_key_value", None)
                if i == 0:
                    hidden.append(x.to(self.device))
                kwargs[i].append(intern(kw))
                if i == n - 1:
                    raise _StopForward
                return x
            return forward

        for i, block in enumerate(blocks):
            block.forward = recorder(i)  # instance attribute shadows the class method
        embed_device = module_device(self.adapter.embed_tokens)
        try:
            for start in range(0, input_ids.shape[0], self.batch_size):
                batch = input_ids[start:start + self.batch_size].to(embed_device)
                try:
                    self.model(input_ids=batch, use_cache=False)
                except _StopForward:
                    pass
                else:
                    raise RuntimeError("the model's forward finished without calling its last decoder block")
        finally:
            for block in blocks:
                del block.forward
        memo: dict[int, torch.Tensor] = {}
        kwargs = [[_to_device(kw, self.device, memo) for kw in per_block] for per_block in kwargs]
        return hidden, kwargs

    # -- per block -------------------------------------------------------------------------------
    def _collect(self, block: nn.Module, inputs: list[torch.Tensor], kwargs: list[dict[str, Any]]):
        """Run the block on every batch, accumulating each projection's input statistics.

        Projections that read the same input tensor (q/k/v after the attention norm, gate/up after the
        MLP norm) share one `LinearStats` object: X^T X is the costliest part of collection (K^2 per
        token), and a Llama block then builds 4 of them instead of 7 (on SmolLM2-135M, with
        K = 576 six times and 1536 once, 23% fewer multiply-adds). A reader whose input is another
        tensor keeps its own statistics.
        """
        stats: dict[str, LinearStats] = {}
        hooks = []
        seen: dict[int, tuple[torch.Tensor, str]] = {}  # id(input) -> (input, first reader) in this batch
        owner: dict[str, str] = {}  # reader -> the reader whose statistics it shares
        if self.collect_stats:
            linears = self.adapter.linears(block)
            for name in self.linear_names:
                lin = linears.get(name)
                if lin is None:  # this block's sublayer was removed (sparsekit.models.surgery)
                    continue
                stats[name] = LinearStats.empty(lin.in_features, self.device, hessian=self.hessian)

                def hook(_mod: nn.Module, args: tuple, _name: str = name) -> None:
                    x = args[0]
                    first = seen.get(id(x))
                    same = first is not None and first[0] is x  # (holding x keeps its id from being reused)
                    if _name in owner:
                        if not (same and first[1] == owner[_name]):
                            raise SparsekitError(f"calibration: {_name} read the input of {owner[_name]} in the first "
                                                 "batch but not in a later one; their statistics cannot be shared")
                        return
                    if same and stats[_name].count == 0:
                        owner[_name] = first[1]
                        stats[_name] = stats[first[1]]
                        return
                    seen[id(x)] = (x, _name)
                    accumulate(stats[_name], x)
                hooks.append(lin.register_forward_pre_hook(hook))
        try:
            outputs = []
            with autocast(self.device, self.autocast):
                for x, kw in zip(inputs, kwargs):
                    outputs.append(block_output(block(x, **kw)))
                    seen.clear()
        finally:
            for h in hooks:
                h.remove()
        return stats, outputs

    def blocks(self, input_ids: torch.Tensor, *, dense_stream: bool = False) -> Iterator[BlockContext]:
        """Yield a `BlockContext` per block; modifications made in the loop body feed the next block.

        dense_stream: also carry the hidden states of the *unmodified* model alongside (one more forward
        of each block, on the dense inputs, before the caller touches it): `ctx.dense_outputs` is then what
        the original model computes at this block's output, the target that lets block i make up for the
        errors of blocks 0..i-1 (block-wise reconstruction against the model, not just the block).
        """
        inputs, kwargs = self.capture(input_ids)
        dense = inputs
        n = self.adapter.num_blocks
        bar = tqdm(range(n), desc="calibrating blocks", unit="block", disable=not self.progress)
        for i in bar:
            block = self.adapter.blocks[i]
            home = module_device(block)
            block.to(self.device)
            try:
                with torch.no_grad():
                    stats, outputs = self._collect(block, inputs, kwargs[i])
                    if dense_stream and dense is not inputs:
                        with autocast(self.device, self.autocast):
                            dense = [block_output(block(x, **kw)) for x, kw in zip(dense, kwargs[i])]
                    elif dense_stream:  # nothing modified yet: the dense stream is this one
                        dense = outputs
                ctx = BlockContext(i, f"{self.adapter.blocks_path}.{i}", block, self.adapter, stats, inputs, outputs,
                                   self.device, kwargs[i], self.autocast, dense if dense_stream else None)
                yield ctx
                if self.sequential:
                    outputs = ctx.forward()
            finally:
                block.to(home)
            inputs = outputs
            kwargs[i] = []  # this block's masks are no longer needed
        self.final_hidden = inputs

    def run(self, input_ids: torch.Tensor, on_block: Callable[[BlockContext], None] | None = None
            ) -> list[torch.Tensor]:
        """Calibrate every block, calling `on_block(ctx)` for each; return the last block's outputs.

        Without a callback nothing changes between passes, so each block runs once.
        """
        sequential, self.sequential = self.sequential, self.sequential and on_block is not None
        try:
            for ctx in self.blocks(input_ids):
                if on_block is not None:
                    on_block(ctx)
        finally:
            self.sequential = sequential
        return self.final_hidden
