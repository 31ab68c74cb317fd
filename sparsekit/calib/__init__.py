"""Layer-by-layer calibration: activation capture and streaming fp32 statistics."""

from sparsekit.calib.engine import BlockContext, LayerwiseCalibrator
from sparsekit.calib.stats import LinearStats, accumulate

__all__ = ["BlockContext", "LayerwiseCalibrator", "LinearStats", "accumulate"]
