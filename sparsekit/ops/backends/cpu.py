"""The CPU backend: the C++ kernels of `sparsekit._cpu` (csrc/cpu/) for every plain layout.

Decode (up to 16 tokens) streams each packed row once per tile of tokens with AVX-512 where the CPU
has it (a portable scalar path elsewhere); prefill dequantizes L2-sized tiles of rows and multiplies
them with BLAS. Float32 and bfloat16 activations, fp32 accumulation (the reference's arithmetic, so
results match it to rounding). The extension is imported on the first call, not here.
"""

from __future__ import annotations

import torch

from sparsekit import _ext
from sparsekit.pack.int8 import Int8
from sparsekit.pack.layouts import MXFP4, Int4, Int4Semi24, Layout, Semi24

#: the binding's layout codes (csrc/cpu/packed_cpu.h: Kind)
_KIND = {Semi24: 0, Int4: 1, Int4Semi24: 2, MXFP4: 3, Int8: 4}
#: the layout kinds whose calls the op's C++ CPU kernel serves itself (csrc/cpu/binding.cpp: packed_linear_cpu)
CPP_KINDS = frozenset(cls.KIND for cls in _KIND)


def unusable(x: torch.Tensor, layout: Layout | None = None) -> str | None:
    """Why the CPU kernels cannot run these inputs, or None."""
    if x.device.type != "cpu":
        return f"the input is on {x.device.type}, not the CPU"
    if x.dtype not in (torch.float32, torch.bfloat16):
        return f"the CPU kernels take float32/bfloat16 activations, got {x.dtype}"
    if not _ext.cpu_available():
        return "sparsekit._cpu is not built (reinstall with a C++ compiler: pip install --no-build-isolation -e .)"
    return None


def cpu_linear(x: torch.Tensor, layout: Layout, bias: torch.Tensor | None = None, path: str = "auto") -> torch.Tensor:
    """`x @ W^T (+ bias)` on the C++ kernels; `path` 'auto' | 'avx512' | 'scalar' (tests pin each one)."""
    t = layout.tensors()
    n, k = layout.shape
    return _ext.load_cpu().linear(x, _KIND[type(layout)], n, k, values=t.get("values"), codes=t.get("codes"),
                                  meta=t.get("meta"), scales=t.get("scales"), zeros=t.get("zeros"),
                                  group=layout.attrs().get("group_size") or 0, bias=bias, path=path)


for _layout in _KIND:
    _layout.register_kernel("cpu", unusable)(cpu_linear)
