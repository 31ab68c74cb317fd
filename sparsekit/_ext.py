"""The compiled extension `sparsekit._C`, loaded lazily; its absence is a logged fact, not an error."""

from __future__ import annotations

import functools
import logging
from types import ModuleType

from sparsekit._version import __version__

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def load() -> ModuleType | None:
    """Return `sparsekit._C`, or None where it was not built (no CUDA at install time) or cannot load."""
    try:
        from sparsekit import _C  # type: ignore[attr-defined]
    except ImportError as exc:
        log.info("sparsekit._C is not available (%s): CUDA C++ kernels off, Triton/reference backends used", exc)
        return None
    built = _C.version()
    if built != __version__:
        log.warning("sparsekit._C was built from sparsekit %s but this is %s: rebuild with "
                    "`pip install --no-build-isolation -e .`", built, __version__)
    return _C


def available() -> bool:
    return load() is not None


def info() -> dict:
    """What the extension offers on this machine: built version and the image running on each GPU."""
    ext = load()
    if ext is None:
        return {"available": False}
    import torch

    archs = {i: ext.compiled_arch(i) for i in range(torch.cuda.device_count())}
    return {"available": True, "version": ext.version(), "compiled_arch": archs}
