"""What the numbers were measured with: versions and device, recorded in every result."""

from __future__ import annotations

import importlib.metadata
import platform

import torch


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("transformers", "triton", "sparsekit"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    out["cuda"] = torch.version.cuda
    return out


def device_name(device: torch.device) -> str:
    """A human-readable name of the device a measurement ran on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"cpu ({cpu}, {torch.get_num_threads()} threads)"
