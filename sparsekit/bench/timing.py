"""Wall-clock timing done right (docs/ARCHITECTURE.md §7): warm-up excluded, device work synchronised,
median + spread."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from sparsekit.errors import SparsekitError


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device: torch.device | str = "cpu", *, warmup: int = 1,
            repeats: int = 5) -> dict:
    """Run `fn` `warmup` times untimed, then `repeats` times timed; milliseconds (median, min, max, runs).

    GPU work is asynchronous: the device is synchronised before each clock read, so a run's time covers
    the kernels it launched, not just their launch."""
    device = torch.device(device)
    if repeats < 1 or warmup < 0:
        raise SparsekitError(f"timing needs repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "runs": len(times)}
