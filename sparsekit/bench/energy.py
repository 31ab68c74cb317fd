"""Energy of a region: NVML's total-energy counter on a GPU, Linux RAPL counters on a CPU.

- GPU: NVML's counter (millijoules since driver load) integrates board power in hardware, so short
  regions are measured without sampling error (Volta and newer).
- CPU: the RAPL package domains under `/sys/class/powercap` (`intel-rapl:N`, AMD's too), each an
  `energy_uj` counter that wraps at `max_energy_range_uj`. A package counter covers the whole socket:
  anything else running on it is counted too, so benchmarks say what else ran.

Where neither can be read, energy is not measured (`joules` None) and `why` says why; it is never
estimated.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

#: where Linux exposes RAPL (a module attribute so tests can point it at a fake tree)
RAPL_ROOT = Path("/sys/class/powercap")


def rapl_packages(root: Path | None = None) -> tuple[list[Path], str | None]:
    """The readable RAPL package domains (folders with `energy_uj`), or [] and the reason there are none."""
    root = RAPL_ROOT if root is None else root
    if not root.is_dir():
        return [], f"{root} does not exist (no RAPL driver, or a VM / container that does not expose it)"
    # package domains are intel-rapl:N named package-N; their sub-domains (intel-rapl:N:M: cores, dram) are
    # parts of them, and a 'psys' domain (the whole platform) contains them: neither is added again
    domains = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1 and (p / "energy_uj").exists()
                     and _name(p).startswith("package"))
    if not domains:
        return [], f"{root} has no RAPL package domain (intel-rapl:N named package-N)"
    try:
        for d in domains:
            int((d / "energy_uj").read_text())
    except PermissionError:
        return [], (f"{domains[0] / 'energy_uj'} is not readable by this user (root only since Linux 5.10: "
                    "sudo chmod o+r it to measure CPU energy)")
    except (OSError, ValueError) as exc:
        return [], f"{domains[0] / 'energy_uj'} could not be read: {exc}"
    return domains, None


def _name(domain: Path) -> str:
    try:
        return (domain / "name").read_text().strip()
    except OSError:
        return ""


def _read_uj(domains: list[Path]) -> list[int]:
    return [int((d / "energy_uj").read_text()) for d in domains]


class EnergyMeter:
    """`with EnergyMeter(device) as m: ...` then `m.joules` (None where not measurable, `m.why` says why)
    and `m.source` ('nvml' or 'rapl')."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.joules: float | None = None
        self.why: str | None = None
        self.source: str | None = None
        self._handle = None
        self._start = None
        self._domains: list[Path] = []
        self._start_uj: list[int] = []

    def __enter__(self) -> "EnergyMeter":
        if self.device.type == "cuda":
            self._enter_nvml()
        elif self.device.type == "cpu":
            self._domains, self.why = rapl_packages()
            if self._domains:
                self._start_uj = _read_uj(self._domains)
        else:
            self.why = f"no energy counter is read for {self.device.type} devices"
        return self

    def _enter_nvml(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            torch.cuda.synchronize(self.device)
            self._start = pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except Exception as exc:  # noqa: BLE001 - no NVML / unsupported GPU: energy is simply not measured
            log.info("energy not measured: %s", exc)
            self.why = f"NVML energy counter unavailable: {exc}"
            self._handle = None

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
            import pynvml

            torch.cuda.synchronize(self.device)
            self.joules = (pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) - self._start) / 1e3
            self.source = "nvml"
        elif self._domains:
            total = 0
            for d, start, end in zip(self._domains, self._start_uj, _read_uj(self._domains)):
                if end < start:  # the counter wrapped once (a region far shorter than the wrap period)
                    end += int((d / "max_energy_range_uj").read_text()) + 1
                total += end - start
            self.joules = total / 1e6
            self.source = "rapl"
