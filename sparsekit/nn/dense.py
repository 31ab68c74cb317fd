"""`DenseLinear`: an `nn.Linear` whose decode calls on a CPU run sparsekit's GEMV (`sparsekit::dense_linear`).

Not a compressed module: the weight is the module's own parameter (same `state_dict`, a tied LM head stays
tied), and the result is `F.linear`'s up to the order of an fp32 sum (bf16: rounded once, from that sum). What
changes is the kernel of CPU decode calls (up to 16 tokens, float32 or bfloat16): torch's fp32 GEMV reads one
thread's worth of memory bandwidth whatever its thread count, and its bf16 GEMV on a CPU without bf16
instructions reads slower than its fp32 one (csrc/cpu/gemv_dense.cpp says what was measured); prefill, other
dtypes and devices run `F.linear` through the same op (bf16 prefill on a CPU without AVX512_BF16: in fp32, where
torch's bf16 matmul is 4-5x slower on Zen 3), and so does every call that autograd records.

`use_dense_kernels(model, "head")` is what `sparsekit.convert` and `sparsekit.load` do to a CPU model whose
LM head stays a plain fp32 or bf16 `nn.Linear` (the head is streamed whole for every decoded token); `"all"` swaps
every plain `nn.Linear`, e.g. to time a dense model on the same kernel as a converted one's head.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from sparsekit import _ext
from sparsekit.errors import SparsekitError
from sparsekit.ops.dense_linear import dense_linear

log = logging.getLogger(__name__)

#: what `use_dense_kernels` can swap
WHICH = ("head", "all")
#: the weight dtypes the kernel serves
DTYPES = (torch.float32, torch.bfloat16)


class DenseLinear(nn.Linear):
    """`nn.Linear` through the op `sparsekit::dense_linear` (module docstring)."""

    #: read by `sparsekit.eval.size.lm_head_precision` (which cannot import this module)
    kernel = "sparsekit GEMV"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # off the CPU (a model moved after the swap) the op would only be F.linear behind a dispatcher hop
        if x.device.type != "cpu" or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return F.linear(x, self.weight, self.bias)
        return dense_linear(x, self.weight, self.bias)


def use_dense_kernels(model: nn.Module, which: str = "head") -> list[str]:
    """Make plain `nn.Linear` modules of `model` `DenseLinear` in place (their parameters untouched) and return
    their names. `which`: 'head' (the output embedding, where it is an `nn.Linear`) or 'all' (every module
    whose type is exactly `nn.Linear`); of those, the ones the kernel serves: a float32 or bfloat16 weight on the
    CPU.
    Nothing is swapped where `sparsekit._cpu` is not built (the op would only be `F.linear` there); that is
    logged."""
    if which not in WHICH:
        raise SparsekitError(f"use_dense_kernels: which must be one of {', '.join(WHICH)}, got {which!r}")
    if not _ext.cpu_available():
        log.info("sparsekit._cpu is not built: the dense projections keep torch's kernels")
        return []
    if which == "head":
        get_out = getattr(model, "get_output_embeddings", None)
        head = get_out() if callable(get_out) else None
        candidates = [head]
    else:
        candidates = list(model.modules())
    targets = [m for m in candidates if type(m) is nn.Linear and m.weight.device.type == "cpu"
               and m.weight.dtype in DTYPES]
    ids = {id(m) for m in targets}
    for m in targets:
        m.__class__ = DenseLinear  # a subclass that adds no state: parameters, hooks and ties stay as they were
    return [name for name, m in model.named_modules() if id(m) in ids]


__all__ = ["DTYPES", "DenseLinear", "WHICH", "use_dense_kernels"]
