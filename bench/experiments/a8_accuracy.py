"""What int8 activations cost in accuracy: the opt-in backend 'cpu_a8' against the exact CPU kernels.

    python bench/experiments/a8_accuracy.py              # -> bench/results/cpu/a8_accuracy.json (~30 min, 2 threads)
    python bench/experiments/a8_accuracy.py --table      # the README table from the JSON

For each recipe whose layout has an a8 kernel (int4 GPTQ g128, MXFP4 RTN, SparseGPT 2:4 + int4 joint,
int8 RTN per channel: the recipes behind the README's accuracy rows of those layouts), the model is compressed once
(calibration as in the README's tables: c4, 128 x 512, seed 0) and converted to packed modules, then
scored twice on the standard CPU protocol (WikiText-2, seqlen 2048, the first 40 windows): with the
exact kernels (backend 'auto', which must reproduce the committed result file of the recipe) and with
'cpu_a8' (activations of every packed projection quantized to int8 blocks of 32, as at decode). The
perplexity difference is the variant's accuracy cost; the exact row's match to the committed file says
the comparison is of the same weights.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import recipe_rows  # noqa: E402  (after the path insert)

OUT = ROOT / "bench" / "results" / "cpu" / "a8_accuracy.json"
#: recipe -> the committed result file of its exact perplexity (README tables)
RECIPES = {"int4-gptq": "bench/results/quant/smollm2-135m_int4-gptq_limit40.json",
           "mxfp4-rtn": "bench/results/quant/smollm2-135m_mxfp4-rtn_limit40.json",
           "sparsegpt-2:4+int4-joint": "bench/results/quant/smollm2-135m_sparsegpt-2-4-int4-joint_limit40.json",
           "int8-rtn": "bench/results/quant/smollm2-135m_int8-rtn_limit40.json"}


def run_recipe(name: str, limit: int, data_dir: str | None) -> dict:
    """Compress + convert once, then the exact and the a8 perplexity of the same packed model."""
    import sparsekit
    from sparsekit.models.loader import load_model
    from sparsekit.nn import set_backend

    model, tokenizer = load_model("smollm2-135m", dtype="float32", device="cpu")
    start = time.perf_counter()
    result = sparsekit.convert(model, name, tokenizer, progress=False, data_dir=data_dir)
    seconds = time.perf_counter() - start
    row = {"recipe": name, "compress_seconds": seconds, "layouts": sorted(set(result.packed.values())),
           "committed": RECIPES[name], "ppl": {}}
    for key, backend in (("exact", "auto"), ("a8", "cpu_a8")):
        modules = set_backend(result.model, backend)
        report = sparsekit.evaluate(result.model, tokenizer, ppl=["wikitext2"], limit=limit, data_dir=data_dir,
                                    progress=False)
        row["ppl"][key] = report["ppl"]["wikitext2"]
    row["a8_modules"] = modules
    row["committed_ppl"] = json.loads((ROOT / RECIPES[name]).read_text())["ppl"]["wikitext2"]
    return row


def table(data: dict) -> str:
    lines = ["| recipe (layout) | exact kernels | cpu_a8 (int8 activations) | change | committed exact (file) |",
             "|---|---|---|---|---|"]
    for r in data["rows"]:
        e, a = r["ppl"]["exact"], r["ppl"]["a8"]
        lines.append(f"| {r['recipe']} ({', '.join(r['layouts'])}) | {e:.3f} | {a:.3f} | {100 * (a / e - 1):+.2f}% | "
                     f"{r['committed_ppl']:.3f} ({r['committed']}) |")
    return "\n".join(lines)


def _unavailable() -> str | None:
    from sparsekit import _ext

    return None if _ext.cpu_available() else "sparsekit._cpu is not built (pip install --no-build-isolation -e .)"


def main(argv: list[str] | None = None) -> int:
    return recipe_rows("a8_accuracy", __doc__, RECIPES, OUT, table, run_recipe, argv=argv, unavailable=_unavailable,
                       line=lambda r: f"exact {r['ppl']['exact']:.3f}  a8 {r['ppl']['a8']:.3f}  (committed "
                                      f"{r['committed_ppl']:.3f})")


if __name__ == "__main__":
    sys.exit(main())
