"""What an int8 LM head costs in accuracy, and what it saves in the bytes of every decoded token.

    python bench/experiments/head_accuracy.py              # -> bench/results/cpu/head_accuracy.json (~45 min, 2 threads)
    python bench/experiments/head_accuracy.py --table      # the README table from the JSON

SmolLM2-135M ties its LM head to the input embeddings and keeps it in fp32: 49152 x 576 weights, 108 MiB
streamed for every decoded token, more than all of its projections in int4 (~39 MiB). For each recipe
(dense; int4 GPTQ g128; SparseGPT 2:4 + int4 joint: the recipes of the README's decode table), the model
is compressed once (calibration as in the README's tables: c4, 128 x 512, seed 0) and converted to
packed modules, scored on the standard CPU protocol (WikiText-2, seqlen 2048, the first 40 windows),
then given the head step `{quantize: {format: int8, targets: [], modules: [lm_head]}}` (per-channel
RTN; the head is untied, so the input embeddings stay exact) and scored again: the same block weights
with and without the int8 head, so the difference is the head's alone. True sizes of both
(`sparsekit.eval.size.weight_bytes`) are recorded.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import INT8_HEAD, recipe_rows  # noqa: E402  (after the path insert)

OUT = ROOT / "bench" / "results" / "cpu" / "head_accuracy.json"
#: row name -> the block recipe (None: dense)
RECIPES = {"dense": None, "int4-gptq": "int4-gptq", "sparsegpt-2:4+int4-joint": "sparsegpt-2:4+int4-joint"}


def run_recipe(name: str, limit: int, data_dir: str | None) -> dict:
    """Compress + convert once; the perplexity and true size with the fp32 head, then with the int8 head."""
    import sparsekit
    from sparsekit.eval.size import weight_bytes
    from sparsekit.models.loader import load_model

    model, tokenizer = load_model("smollm2-135m", dtype="float32", device="cpu")
    start = time.perf_counter()
    if RECIPES[name] is not None:
        model = sparsekit.convert(model, RECIPES[name], tokenizer, progress=False, data_dir=data_dir).model
    seconds = time.perf_counter() - start
    row: dict = {"recipe": name, "compress_seconds": seconds, "ppl": {}, "bytes": {}}

    def score(key: str) -> None:
        report = sparsekit.evaluate(model, tokenizer, ppl=["wikitext2"], limit=limit, data_dir=data_dir, progress=False)
        row["ppl"][key] = report["ppl"]["wikitext2"]
        row["bytes"][key] = weight_bytes(model)

    score("fp32_head")
    head = sparsekit.convert(model, [INT8_HEAD], tokenizer, progress=False, data_dir=data_dir)
    row["head_layout"] = head.packed["lm_head"]
    score("int8_head")
    return row


def table(data: dict) -> str:
    lines = ["| recipe | fp32 tied head: ppl | MiB | int8 head (untied): ppl | MiB | change |", "|---|---|---|---|---|---|"]
    for r in data["rows"]:
        f, i = r["ppl"]["fp32_head"], r["ppl"]["int8_head"]
        lines.append(f"| {r['recipe']} | {f:.3f} | {r['bytes']['fp32_head'] / 2**20:.1f} | {i:.3f} | "
                     f"{r['bytes']['int8_head'] / 2**20:.1f} | {100 * (i / f - 1):+.2f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return recipe_rows("head_accuracy", __doc__, RECIPES, OUT, table, run_recipe, argv=argv,
                       extra={"head_step": INT8_HEAD},
                       line=lambda r: f"fp32 head {r['ppl']['fp32_head']:.3f}  int8 head {r['ppl']['int8_head']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
