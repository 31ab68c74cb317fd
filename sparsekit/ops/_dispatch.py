"""The backends and their `auto` order: 'cuda' -> 'triton' -> 'cpu' -> 'reference' (docs/ARCHITECTURE.md §3).

`AUTO_ORDER` is the order `auto` tries; `OPT_IN` backends run only when named. Packed layouts dispatch through their own kernel registry
(`sparsekit.ops.packed_linear.select_kernel`); ops without layouts (`sum_squares`) use `pick_backend`:
the compiled CUDA kernel when the extension is loaded and supports the inputs, else Triton when the
tensor is on a GPU (or TRITON_INTERPRET=1 lets Triton run on CPU tensors), else the pure-torch
reference, which is the specification every other backend is tested against.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

#: the order `auto` tries
AUTO_ORDER = ("cuda", "triton", "cpu", "reference")
#: backends `auto` never picks, taken only by name: variants whose arithmetic differs from the reference
#: beyond rounding, or exact ones slower than an `AUTO_ORDER` backend. 'cpu_a8': the CPU kernels with activations quantized to int8 blocks of 32
#: (llama.cpp's Q8_0) for the int4, int4 + 2:4, MXFP4 and int8 layouts (sparsekit/ops/backends/cpu.py).
#: 'torch_cpu': torch's own weight-only CPU kernels for int8 and int4 (sparsekit/ops/backends/torch_cpu.py):
#: exact, but slower than 'cpu' everywhere measured, so only the benchmarks' baselines and users name it.
OPT_IN = ("cpu_a8", "torch_cpu")
BACKENDS = ("auto", *AUTO_ORDER, *OPT_IN)


@functools.lru_cache(maxsize=None)
def triton_installed() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # a broken or deliberately hidden install counts as absent
        return False


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_unusable(x: torch.Tensor) -> str | None:
    """Why Triton cannot run on this tensor, or None: a GPU tensor, or a CPU one under the interpreter."""
    if not triton_installed():
        return "triton is not installed"
    if x.is_cuda:
        return None
    if x.device.type != "cpu":
        return f"Triton runs on CUDA tensors (or CPU ones under TRITON_INTERPRET=1), not on {x.device.type}"
    if not triton_interpret():
        return "the tensor is on the CPU (set TRITON_INTERPRET=1 to run Triton there)"
    return None


def triton_usable(x: torch.Tensor) -> bool:
    """Triton can run on this tensor: a GPU tensor, or a CPU tensor under the interpreter."""
    return triton_unusable(x) is None


def pick_backend(op: str, requested: str, x: torch.Tensor, *, has_cuda: bool = False,
                 cuda_ok: bool = False, has_triton: bool = True) -> str:
    """Resolve `requested` for op `op` on input `x`; an explicit but unusable backend is an error.

    Args:
        has_cuda: the op has a kernel in sparsekit._C at all.
        cuda_ok: that kernel is loaded and supports these inputs (shape, dtype, architecture).
        has_triton: the op has a Triton kernel for these inputs.
    """
    if requested not in BACKENDS:
        raise ValueError(f"{op}: unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    if requested == "auto":
        if has_cuda and cuda_ok:
            return "cuda"
        return "triton" if has_triton and triton_usable(x) else "reference"
    if requested == "cuda" and not (has_cuda and cuda_ok):
        why = "has no CUDA kernel" if not has_cuda else "cannot use the CUDA kernel for these inputs or this build"
        raise ValueError(f"{op}: backend='cuda' requested but the op {why}; use backend='auto'")
    if requested in ("cpu", *OPT_IN):
        raise ValueError(f"{op}: backend={requested!r} requested but the op has no such kernel; use backend='auto'")
    if requested == "triton" and not has_triton:
        raise ValueError(f"{op}: backend='triton' requested but the op has no Triton kernel for this layout; "
                         "use backend='auto'")
    why = triton_unusable(x) if requested == "triton" else None
    if why:
        raise ValueError(f"{op}: backend='triton' requested but {why}; use backend='auto'")
    return requested
