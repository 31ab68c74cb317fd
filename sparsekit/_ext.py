"""The compiled extensions, loaded lazily; an absent one is a logged fact, not an error.

`sparsekit._C`: the CUDA kernels (built where CUDA is present). `sparsekit._cpu`: the CPU kernels of the
packed layouts (built wherever a C++ compiler is). Without them the Triton / reference backends run.
"""

from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType

from sparsekit._version import __version__

log = logging.getLogger(__name__)


def _load(name: str, what: str) -> ModuleType | None:
    import torch  # noqa: F401  (the extensions link against libtorch, which importing torch loads)

    try:
        module = importlib.import_module(f"sparsekit.{name}")
    except ImportError as exc:
        log.info("sparsekit.%s is not available (%s): %s off, Triton/reference backends used", name, exc, what)
        return None
    built = module.version()
    if built != __version__:
        log.warning("sparsekit.%s was built from sparsekit %s but this is %s: rebuild with "
                    "`pip install --no-build-isolation -e .`", name, built, __version__)
    return module


@functools.lru_cache(maxsize=None)
def load() -> ModuleType | None:
    """Return `sparsekit._C`, or None where it was not built (no CUDA at install time) or cannot load."""
    return _load("_C", "CUDA C++ kernels")


@functools.lru_cache(maxsize=None)
def load_cpu() -> ModuleType | None:
    """Return `sparsekit._cpu`, or None where it was not built (no C++ compiler at install time)."""
    return _load("_cpu", "CPU C++ kernels")


def available() -> bool:
    return load() is not None


def cpu_available() -> bool:
    return load_cpu() is not None


def info() -> dict:
    """What the CUDA extension offers on this machine: built version and the image running on each GPU."""
    ext = load()
    if ext is None:
        return {"available": False}
    import torch

    archs = {i: ext.compiled_arch(i) for i in range(torch.cuda.device_count())}
    return {"available": True, "version": ext.version(), "compiled_arch": archs}


def cpu_info() -> dict:
    """What the CPU extension offers here: built version, which of its SIMD paths run on this CPU ('auto'
    takes AVX-512, then AVX2, then the portable scalar path), and which int8-activation decode kernels the
    'cpu_a8' backend runs ('a8': 'vnni', 'avx2', or 'none': the exact kernels on the quantized activations), and
    where the decode loops prefetch the weight ('prefetch': 'l1:BYTES' or 'l2:BYTES' ahead; SPARSEKIT_CPU_PREFETCH
    sets it before the first call), and whether the AVX512_BF16 decode kernels run ('bf16_dot': 2:4 bf16 layers
    times bf16 activations; int4, MXFP4 and int4 + 2:4 at one token or on bf16 activations, times exact bf16 parts
    of any finite activations below 2^127; at 2-16 tokens of fp32 activations these three run fp32 lookup and FMA
    tiles on any AVX-512 CPU)."""
    ext = load_cpu()
    if ext is None:
        return {"available": False}
    info = {"available": True, "version": ext.version(), "avx512": bool(ext.has_avx512()),
            "avx2": bool(ext.has_avx2())}
    if hasattr(ext, "a8_kernels"):  # an extension built before the AVX2 a8 kernels has no such function
        info["a8"] = ext.a8_kernels()
    if hasattr(ext, "prefetch"):  # nor one built before the per-CPU prefetch plan
        info["prefetch"] = ext.prefetch()
    if hasattr(ext, "has_bf16_dot"):  # nor one built before the AVX512_BF16 2:4 kernel
        info["bf16_dot"] = bool(ext.has_bf16_dot())
    return info
