"""Speed, memory and energy measurement of whole models (`sparsekit bench`): timing, NVML energy, the model loop."""

from sparsekit.bench.energy import EnergyMeter
from sparsekit.bench.model import benchmark_model, check_not_zeros
from sparsekit.bench.timing import time_fn

__all__ = ["EnergyMeter", "benchmark_model", "check_not_zeros", "time_fn"]
