"""Evaluation and calibration data, read offline from `data_dir` / $SPARSEKIT_DATA."""

from sparsekit.data.calibration import CALIBRATION_SOURCES, calibration_windows, packed_windows
from sparsekit.data.datasets import (PERPLEXITY_SETS, c4_documents, c4_text, perplexity_set, read_texts,
                                     wikitext2_rows, wikitext2_text)

__all__ = ["CALIBRATION_SOURCES", "PERPLEXITY_SETS", "c4_documents", "c4_text", "calibration_windows", "packed_windows",
           "perplexity_set", "read_texts", "wikitext2_rows", "wikitext2_text"]
