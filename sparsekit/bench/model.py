"""Model benchmarks: prefill latency, decode tokens/s, peak memory and energy per token.

- **prefill**: one forward pass over `batch` x `prefill` random tokens (no cache), median of repeats;
- **decode**: greedy generation of exactly `decode` new tokens after a 16-token prompt with the KV
  cache (`generate`, under inference mode; with `compile=True`: a static cache and `torch.compile` — mode 'reduce-overhead',
  i.e. CUDA graphs, on a GPU; inductor's default on a CPU — so Python overhead does not hide the
  kernels; compilation happens in the warm-up run); tokens/s =
  batch x decode / median time (the 16-token prompt is inside the timed region);
- **memory**: peak CUDA allocation over the run, or on the CPU the peak resident set size of the
  process during the run (Linux: its high-water mark reset first, so loading and converting the model
  do not count; `peak_mem_window` says 'process' where it could not be reset);
- **energy**: joules over the decode runs / tokens generated: NVML on a GPU, RAPL package counters on a
  CPU (the whole socket: other processes count too); None with `energy_note` saying why where neither
  can be read.

Random token ids are used, never zeros; a model whose projection weights are all zero is refused
(`check_not_zeros`): zeros can run faster than real data and would hide wrong kernels.
"""

from __future__ import annotations

import gc
import resource

import torch
import torch.nn as nn

from sparsekit.bench.energy import EnergyMeter
from sparsekit.bench.timing import time_fn
from sparsekit.errors import SparsekitError

PROMPT = 16


def check_not_zeros(model: nn.Module) -> None:
    """Refuse to time a model with an all-zero weight matrix (random weights are the rule for speed runs)."""
    for name, tensor in model.named_parameters():
        if tensor.dim() >= 2 and tensor.numel() and not bool(tensor.detach().any()):
            raise SparsekitError(f"refusing to time {name}: all its values are zero, and zeros can run faster than "
                                 "real data; use trained or random weights")


def _reset_peak(device: torch.device) -> bool:
    """Start a fresh peak-memory window: on a GPU the allocator's counter; on Linux the process's resident
    high-water mark (writing 5 to /proc/self/clear_refs), so that loading or converting the model before
    the benchmark does not count. False where the CPU mark cannot be reset (then it spans the process)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:  # hand the heap pages freed by loading / converting back to the OS first (glibc keeps them)
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:  # VmHWM follows the reset above; ru_maxrss does not
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


# inference mode, as a serving loop runs: no autograd bookkeeping, and the packed custom op skips its
# Python autograd kernel (~7 us a call, 210 calls a SmolLM2 token)
@torch.inference_mode()
def benchmark_model(model: nn.Module, *, prefill: int = 2048, decode: int = 128, batch: int = 1, repeats: int = 5,
                    warmup: int = 1, compile: bool = False, seed: int = 0) -> dict:
    """Speed, memory and energy of `model` where it lives (see module docstring)."""
    if min(prefill, decode, batch, repeats) < 1:
        raise SparsekitError(f"bench needs prefill, decode, batch and repeats >= 1, got {prefill}, {decode}, {batch}, "
                             f"{repeats}")
    check_not_zeros(model)
    device = next(model.parameters()).device
    vocab = int(getattr(model.config, "vocab_size", 0) or 1000)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, prefill), generator=g).to(device)
    prompt = torch.randint(3, vocab, (batch, PROMPT), generator=g).to(device)
    gc.collect()  # what converting the model freed goes back before the window opens
    peak_window = "benchmark" if _reset_peak(device) else "process"
    prefill_t = time_fn(lambda: model(input_ids=ids, use_cache=False), device, warmup=warmup, repeats=repeats)
    gen_kwargs = dict(max_new_tokens=decode, min_new_tokens=decode, do_sample=False,
                      pad_token_id=getattr(model.config, "pad_token_id", None) or 0)
    forward = model.forward
    if compile:
        # without module guards (below) a graph compiled for another model in this process (a sweep's previous
        # point) would be reused for this one: start from an empty cache, and leave one behind
        torch._dynamo.reset()
        # a static cache gives every decode step the same shapes, so one compiled graph serves them all; on a
        # GPU CUDA graphs then remove the launch overhead, on a CPU inductor's C++ removes Python's per op
        gen_kwargs["cache_implementation"] = "static"
        if device.type == "cuda":
            model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=False)
        else:
            # the module's parameters and buffers do not change while it is timed, so dynamo need not re-check
            # them before every step: ~1.5 ms of guards a SmolLM2 token on this CPU otherwise
            skip = getattr(torch.compiler, "skip_guard_on_all_nn_modules_unsafe", None)
            model.forward = torch.compile(model.forward, fullgraph=False,
                                          options={"guard_filter_fn": skip} if skip is not None else None)
    try:
        for _ in range(warmup):  # outside the meter: compiling is not decoding
            model.generate(prompt, **gen_kwargs)
        with EnergyMeter(device) as meter:
            decode_t = time_fn(lambda: model.generate(prompt, **gen_kwargs), device, warmup=0, repeats=repeats)
    finally:
        model.forward = forward
        if compile:
            torch._dynamo.reset()
    tokens = batch * decode
    joules = None if meter.joules is None else meter.joules / (tokens * repeats)
    return {"prefill": {"tokens": batch * prefill, **prefill_t},
            "decode": {"new_tokens": tokens, "prompt_tokens": batch * PROMPT,
                       "tokens_per_s": tokens / (decode_t["median_ms"] / 1e3),
                       "tokens_per_s_min": tokens / (decode_t["max_ms"] / 1e3),
                       "tokens_per_s_max": tokens / (decode_t["min_ms"] / 1e3), **decode_t},
            "peak_mem_bytes": _peak_bytes(device), "peak_mem_window": peak_window, "joules_per_token": joules,
            "energy_source": meter.source, "energy_note": meter.why,
            "compiled": bool(compile),
            "batch": batch}
