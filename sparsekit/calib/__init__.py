"""Layer-by-layer calibration: activation capture and streaming fp32 statistics."""

from sparsekit.calib.engine import BlockContext, CalibSettings, LayerwiseCalibrator
from sparsekit.calib.stats import LinearStats, accumulate

__all__ = ["BlockContext", "CalibSettings", "LayerwiseCalibrator", "LinearStats", "accumulate"]
