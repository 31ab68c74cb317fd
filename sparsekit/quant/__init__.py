"""Quantization math: weight formats (quantize -> codes + scales, dequantize), RTN and GPTQ.

Pure functions over tensors (and calibration Hessians for GPTQ); they know no model, recipe or file.
`sparsekit.steps.quantize` runs them over a model block by block. Formats by name:
`sparsekit.quant.formats.get_format` (its module docstring tabulates them with their true bits).
"""

from sparsekit.quant.base import PER_CHANNEL, PER_TENSOR, QTensor, QuantFormat
from sparsekit.quant.formats import FORMATS, GPTQ_FORMATS, get_format
from sparsekit.quant.gptq import GroupQuantizer, gptq, sparsegpt_gptq
from sparsekit.quant.integer import IntFormat
from sparsekit.quant.splitquant import SplitQuant, kmeans_1d
from sparsekit.quant.ternary import Ternary

__all__ = ["FORMATS", "GPTQ_FORMATS", "GroupQuantizer", "IntFormat", "PER_CHANNEL", "PER_TENSOR", "QTensor",
           "QuantFormat", "SplitQuant", "Ternary", "get_format", "gptq", "kmeans_1d", "sparsegpt_gptq"]
