"""The real default model (SmolLM2-135M) through RTN quantization: formats order as their bits say."""

import copy

import pytest

from sparsekit.data.datasets import wikitext2_text
from sparsekit.eval.perplexity import perplexity
from sparsekit.models.adapters import get_adapter
from sparsekit.recipe import Quantize
from sparsekit.steps.quantize import run_quantize


@pytest.mark.slow
def test_smollm2_rtn_formats(smollm2, data_dir):
    model, tok = smollm2
    text = wikitext2_text("test", data_dir)[:20000]

    def ppl(m):
        return perplexity(m, tok, text, seqlen=512, limit=2, progress=False).ppl

    dense = ppl(model)
    got = {}
    for fmt in ("int8", "mxfp6", "int4", "ternary"):
        m = copy.deepcopy(model)
        run_quantize(m, get_adapter(m), Quantize(format=fmt), progress=False)  # int4: K=576 -> short last group
        got[fmt] = ppl(m)
    assert abs(got["int8"] / dense - 1) < 0.01
    assert got["int8"] < got["mxfp6"] < got["int4"] < got["ternary"]
    assert got["ternary"] > 5 * dense  # 1.58-bit post-training quantization destroys a 135M model
