"""Accuracy and size measurement."""

from sparsekit.eval.perplexity import PerplexityResult, check_seqlen, perplexity, perplexity_from_ids, position_nll
from sparsekit.eval.size import projection_sparsity, weight_bytes

__all__ = ["PerplexityResult", "check_seqlen", "perplexity", "perplexity_from_ids", "position_nll",
           "projection_sparsity", "weight_bytes"]
