"""Accuracy and size measurement."""

from sparsekit.eval.perplexity import PerplexityResult, check_seqlen, perplexity, perplexity_from_ids
from sparsekit.eval.size import projection_sparsity, weight_bytes

__all__ = ["PerplexityResult", "check_seqlen", "perplexity", "perplexity_from_ids", "projection_sparsity",
           "weight_bytes"]
