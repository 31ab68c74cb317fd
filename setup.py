"""Build script: packages (metadata lives in pyproject.toml) and the optional compiled extensions.

- `sparsekit._cpu` (csrc/cpu/): the CPU kernels of the packed layouts. Built wherever the torch that
  setup.py sees is importable and a C++ compiler works (`pip install --no-build-isolation -e .`); a
  failed build is reported and skipped (the extension is optional: the reference path remains).
- `sparsekit._C` (csrc/*.cu): the CUDA kernels, only where torch has CUDA and a CUDA toolkit is found.
Everywhere else the install is pure Python and `import sparsekit` logs which extension is absent.

Environment knobs:
    SPARSEKIT_BUILD_EXT=0|1   force the CUDA extension off / on (on fails loudly if CUDA is missing)
    SPARSEKIT_BUILD_CPU=0|1   force the CPU extension off / on (on: a failed build fails the install)
    TORCH_CUDA_ARCH_LIST      architectures to compile (default "8.0;9.0a": Ampere mma.sp, Hopper wgmma)
"""

import os
import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "sparsekit" / "_version.py").read_text()).group(1)
PACKAGES = find_packages(include=["sparsekit", "sparsekit.*"])
DEFINE = [f"-DSPARSEKIT_VERSION={VERSION}"]  # stringified in C++: no quotes to survive ninja's shell


def _flag(name: str) -> str:
    value = os.environ.get(name, "auto").lower()
    return {"0": "off", "false": "off", "no": "off", "1": "on", "true": "on", "yes": "on"}.get(value, "auto")


def _cpu_extension():
    """The CPU kernels, or None where torch is not importable at build time."""
    wanted = _flag("SPARSEKIT_BUILD_CPU")
    if wanted == "off":
        return None
    try:
        from torch.utils.cpp_extension import CppExtension
    except ImportError:
        if wanted == "on":
            raise RuntimeError("SPARSEKIT_BUILD_CPU=1 but torch is not importable in the build environment: "
                               "install torch first and use --no-build-isolation")
        return None
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cpu").glob("*.cpp"))
    # -fopenmp: at::parallel_for is an OpenMP loop compiled into this extension (torch's own runtime runs it)
    return CppExtension(name="sparsekit._cpu", sources=sources, extra_compile_args=["-O3", "-fopenmp", *DEFINE],
                        extra_link_args=["-fopenmp"], optional=wanted != "on")


def _cuda_extension():
    """The CUDA kernels, or None where CUDA is absent."""
    wanted = _flag("SPARSEKIT_BUILD_EXT")
    if wanted == "off":
        return None
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, CUDAExtension
    except ImportError:
        if wanted == "on":
            raise RuntimeError("SPARSEKIT_BUILD_EXT=1 but torch is not importable in the build "
                               "environment: install torch first and use --no-build-isolation")
        return None
    if torch.version.cuda is None or CUDA_HOME is None:
        if wanted == "on":
            raise RuntimeError(f"SPARSEKIT_BUILD_EXT=1 but torch {torch.__version__} has no CUDA "
                               f"or no CUDA toolkit was found (CUDA_HOME={CUDA_HOME})")
        return None
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0a")
    sources = ["csrc/binding.cpp"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cu"))
    # No -std here: torch's BuildExtension picks the standard its headers need (C++17 or C++20).
    return CUDAExtension(name="sparsekit._C", sources=sources,
                         extra_compile_args={"cxx": ["-O3", *DEFINE], "nvcc": ["-O3", *DEFINE]})


def _extensions():
    exts = [e for e in (_cpu_extension(), _cuda_extension()) if e is not None]
    if not exts:
        return [], {}
    from torch.utils.cpp_extension import BuildExtension

    class BuildOptional(BuildExtension):
        """torch's builder raises RuntimeError when a compile fails (ninja), which setuptools' `optional`
        does not catch: an optional extension that fails to build is reported and skipped here instead."""

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as exc:  # noqa: BLE001 - a compiler error of any kind
                if not getattr(ext, "optional", False):
                    raise
                print(f"setup.py: WARNING: optional extension {ext.name} was not built ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''}); sparsekit runs without it")

    return exts, {"build_ext": BuildOptional.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    version=VERSION,
    packages=PACKAGES,
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
