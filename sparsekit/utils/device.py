"""Device and dtype resolution shared by the API and the CLI."""

from __future__ import annotations

import torch

from sparsekit.errors import SparsekitError

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' -> the first CUDA device when one is visible, else CPU; anything else is validated."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SparsekitError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SparsekitError(f"device {device!r} requested but no CUDA device is visible: use --device cpu")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'auto' -> float32 on CPU (the dense baseline as loaded), float16 on accelerators."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise SparsekitError(
            f"unknown dtype {dtype!r}: use one of auto, {', '.join(sorted(set(_DTYPES)))}") from None
