"""What the numbers were measured with: versions and device, recorded in every result."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
from pathlib import Path

import torch


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("transformers", "triton", "sparsekit"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    if out["sparsekit"] is None:  # imported from a source tree that was never installed (the GPU machine)
        from sparsekit import __version__

        out["sparsekit"] = f"{__version__} (source tree)"
    out["cuda"] = torch.version.cuda
    return out


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of Linux's /proc/cpuinfo (empty elsewhere)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # one processor is enough: the others repeat it
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's marketing name (Linux: /proc/cpuinfo's `model name`), else what `platform` knows. Wall times
    are only comparable on the same CPU, and the machines of this project change between sessions."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (`avx2`, `avx512_bf16`, ...); empty where unknown."""
    return frozenset(_cpuinfo().get("flags", "").split())


def device_name(device: torch.device) -> str:
    """A human-readable name of the device a measurement ran on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()}, {platform.machine()}, {torch.get_num_threads()} threads)"
