"""GPU energy from NVML's total-energy counter (millijoules since driver load), read around a region.

The counter integrates board power in hardware, so short regions are measured without sampling error
(Volta and newer). On the CPU, or without `pynvml`, energy is "not measured" (None), never estimated.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class EnergyMeter:
    """`with EnergyMeter(device) as m: ...` then `m.joules` (None where not measurable)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.joules: float | None = None
        self._handle = None
        self._start = None

    def __enter__(self) -> "EnergyMeter":
        if self.device.type != "cuda":
            return self
        try:
            import pynvml

            pynvml.nvmlInit()
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            torch.cuda.synchronize(self.device)
            self._start = pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except Exception as exc:  # noqa: BLE001 - no NVML / unsupported GPU: energy is simply not measured
            log.info("energy not measured: %s", exc)
            self._handle = None
        return self

    def __exit__(self, *exc_info) -> None:
        if self._handle is None:
            return
        import pynvml

        torch.cuda.synchronize(self.device)
        self.joules = (pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) - self._start) / 1e3
