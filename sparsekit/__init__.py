"""sparsekit: prune and quantize LLMs, run them on real kernels, measure the truth.

Importing sparsekit is cheap and has no side effects: it needs neither a GPU, nor Triton, nor the
compiled extension. Public names are resolved lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sparsekit._version import __version__

_EXPORTS = {
    "evaluate": "sparsekit.api",
    "compress": "sparsekit.api",
    "convert": "sparsekit.api",
    "save": "sparsekit.api",
    "load": "sparsekit.api",
    "benchmark": "sparsekit.api",
    "Recipe": "sparsekit.recipe",
    "Prune": "sparsekit.recipe",
    "Quantize": "sparsekit.recipe",
    "load_recipe": "sparsekit.recipe",
    "load_model": "sparsekit.models",
    "get_adapter": "sparsekit.models",
    "register_architecture": "sparsekit.models",
    "ArchSpec": "sparsekit.models",
    "SparsekitError": "sparsekit.errors",
    "LayerwiseCalibrator": "sparsekit.calib",
    "BlockContext": "sparsekit.calib",
    "perplexity": "sparsekit.eval",
    "calibration_windows": "sparsekit.data",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from sparsekit.api import benchmark, compress, convert, evaluate, load, save
    from sparsekit.calib import BlockContext, LayerwiseCalibrator
    from sparsekit.data import calibration_windows
    from sparsekit.errors import SparsekitError
    from sparsekit.eval import perplexity
    from sparsekit.models import ArchSpec, get_adapter, load_model, register_architecture
    from sparsekit.recipe import Prune, Quantize, Recipe, load_recipe


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sparsekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
