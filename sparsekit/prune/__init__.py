"""Pruning math: importance scores, mask selection, SparseGPT, and per-module ratio allocation.

Pure functions over tensors and calibration statistics; they know no model, recipe or file.
`sparsekit.steps.prune` runs them over a model block by block.
"""

from sparsekit.prune.allocation import (CostCurve, allocate_budget, global_threshold_counts, outlier_ratio,
                                        owl_ratios, per_type_ratios)
from sparsekit.prune.magnitude import magnitude_scores
from sparsekit.prune.methods import METHODS, granularity, prune_weight
from sparsekit.prune.patterns import Pattern, is_nm, nm_mask, parse_pattern, select_mask, unstructured_mask
from sparsekit.prune.sparsegpt import sparsegpt
from sparsekit.prune.wanda import wanda_scores

__all__ = ["CostCurve", "METHODS", "Pattern", "allocate_budget", "global_threshold_counts", "granularity", "is_nm",
           "magnitude_scores", "nm_mask", "outlier_ratio", "owl_ratios", "parse_pattern", "per_type_ratios",
           "prune_weight", "select_mask", "sparsegpt", "unstructured_mask", "wanda_scores"]
