"""Recipe steps run over a model (orchestration: the math lives in sparsekit.prune / sparsekit.quant)."""
