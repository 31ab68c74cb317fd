"""Build script: packages (metadata lives in pyproject.toml) and the optional CUDA extension.

`sparsekit._C` is compiled only when the torch that setup.py sees was built with CUDA and a CUDA
toolkit is found (build with `pip install --no-build-isolation -e .` so that torch is visible).
Everywhere else the install is pure Python and `import sparsekit` logs that the extension is absent.

Environment knobs:
    SPARSEKIT_BUILD_EXT=0|1   force the extension off / on (on fails loudly if CUDA is missing)
    TORCH_CUDA_ARCH_LIST      architectures to compile (default "8.0;9.0a": Ampere mma.sp, Hopper wgmma)
"""

import os
import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "sparsekit" / "_version.py").read_text()).group(1)
PACKAGES = find_packages(include=["sparsekit", "sparsekit.*"])


def _cuda_extension():
    """Return (ext_modules, cmdclass) for sparsekit._C, or empty ones where CUDA is absent."""
    wanted = os.environ.get("SPARSEKIT_BUILD_EXT", "auto").lower()
    if wanted in ("0", "false", "no"):
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:
        if wanted in ("1", "true", "yes"):
            raise RuntimeError("SPARSEKIT_BUILD_EXT=1 but torch is not importable in the build "
                               "environment: install torch first and use --no-build-isolation")
        return [], {}
    if torch.version.cuda is None or CUDA_HOME is None:
        if wanted in ("1", "true", "yes"):
            raise RuntimeError(f"SPARSEKIT_BUILD_EXT=1 but torch {torch.__version__} has no CUDA "
                               f"or no CUDA toolkit was found (CUDA_HOME={CUDA_HOME})")
        return [], {}
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0a")
    sources = ["csrc/binding.cpp"] + sorted(str(p) for p in (ROOT / "csrc").glob("*.cu"))
    define = [f"-DSPARSEKIT_VERSION={VERSION}"]  # stringified in C++: no quotes to survive ninja's shell
    ext = CUDAExtension(
        name="sparsekit._C",
        sources=sources,
        # No -std here: torch's BuildExtension picks the standard its headers need (C++17 or C++20).
        extra_compile_args={"cxx": ["-O3", *define],
                            "nvcc": ["-O3", *define]},
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _cuda_extension()

setup(
    version=VERSION,
    packages=PACKAGES,
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
