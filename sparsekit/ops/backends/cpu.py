"""The CPU backend: the C++ kernels of `sparsekit._cpu` (csrc/cpu/) for every plain layout.

Decode (up to 16 tokens) streams each packed row once per tile of tokens with AVX-512 where the CPU
has it, else AVX2 (+ FMA, F16C: x86-64 since Haswell / Zen 1), else a portable scalar path; prefill
dequantizes 16 MiB tiles of rows and multiplies them with BLAS. Float32 and bfloat16 activations, fp32
accumulation (the reference's arithmetic, so results match it to rounding). The opt-in backend 'cpu_a8' (below) quantizes the activations to int8 for
the int4, int4 + 2:4, MXFP4 and int8 layouts. The extension is imported on the first call, not here.
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


def cpu_linear(x: torch.Tensor, layout: Layout, bias: torch.Tensor | None = None, path: str = "auto",
               acts: str = "float") -> torch.Tensor:
    """`x @ W^T (+ bias)` on the C++ kernels; `path` 'auto' (AVX-512, else AVX2, else scalar) | 'avx512' |
    'avx2' | 'scalar' (tests and benchmarks pin each one; a forced SIMD path the CPU lacks, or whose 16-input
    steps the layout's group size does not fit, raises); `acts` 'float' (exact) or 'int8' (the a8 variant,
    see `cpu_a8_linear`: its VNNI kernels run where the path is AVX-512 and the CPU has VNNI, its AVX2
    kernels on 'avx2' (which forces them) or an AVX-512 CPU without VNNI; on 'scalar' it is the exact
    kernels on the quantized activations)."""
    t = layout.tensors()
    n, k = layout.shape
    return _ext.load_cpu().linear(x, _KIND[type(layout)], n, k, values=t.get("values"), codes=t.get("codes"),
                                  meta=t.get("meta"), scales=t.get("scales"), zeros=t.get("zeros"),
                                  group=layout.attrs().get("group_size") or 0, bias=bias, path=path, acts=acts)


for _layout in _KIND:
    _layout.register_kernel("cpu", unusable)(cpu_linear)


# ------------------------------------------------------------------------------------------- cpu_a8
#: the layouts with int8-activation kernels (csrc/cpu/gemm_avx512_vnni.cpp, and gemm_avx2.cpp without VNNI;
#: on a CPU without AVX2 the exact kernels run on the quantized activations)
A8_LAYOUTS = (Int4, Int4Semi24, MXFP4, Int8)


def unusable_a8(x: torch.Tensor, layout: Layout) -> str | None:
    """Why the a8 variant cannot run these inputs, or None (the C++ binding checks the same)."""
    why = unusable(x, layout)
    if why:
        return why
    n, k = layout.shape
    if k % 32:
        return f"int8 activations come in blocks of 32 inputs: in_features % 32 == 0 is needed, got {k}"
    group = layout.attrs().get("group_size")
    if group is not None and group % 32 and group < k:
        return (f"int8 activation blocks of 32 must not straddle weight groups: group_size % 32 == 0 is needed, "
                f"got {group}")
    return None


def cpu_a8_linear(x: torch.Tensor, layout: Layout, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The opt-in backend 'cpu_a8': activations quantized per block of 32 inputs to int8 (absmax,
    round half to even: llama.cpp's Q8_0) and multiplied with the weight codes by integer dot products at
    decode (up to 16 tokens: AVX-512 VNNI, else AVX2 vpmaddubsw); prefill, and CPUs without AVX2, run the
    exact kernels on the same quantized activations. The weights are used as stored; the result is the exact product with x
    replaced by `fake_quant_acts(x)` (to fp32 rounding)."""
    return cpu_linear(x, layout, bias, acts="int8")


def fake_quant_acts(x: torch.Tensor) -> torch.Tensor:
    """`x` ([M, K] float32) with each block of 32 inputs replaced by its int8 quantization times the block
    scale: what the a8 kernels multiply. The C++ definition; the tests emulate it in torch."""
    return _ext.load_cpu().fake_quant_acts(x)


for _layout in A8_LAYOUTS:
    _layout.register_kernel("cpu_a8", unusable_a8)(cpu_a8_linear)
