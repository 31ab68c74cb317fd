"""SmolLM2-135M exported by `sparsekit export`, scored by the readers users run: llama.cpp (through
llama-cpp-python) for GGUF and transformers' compressed-tensors loader (what vLLM's format is) for
compressed-tensors, next to sparsekit's own perplexity on the same WikiText-2 windows.

    python bench/experiments/export_readers.py               # ~6 min on 2 cores; writes the JSON
    python bench/experiments/export_readers.py --table       # the README table from the JSON

Each variant is a data-free recipe (RTN; magnitude for 2:4): the point is that the files carry the
same model, not which recipe is best. Windows: the first `--limit` windows of 2048 tokens of the
WikiText-2 test split, tokenized once by sparsekit and fed as the same token ids to every reader.
The compressed-tensors export is float16 (the default: scales exact, values rounded to fp16 as vLLM
runs them), decompressed by the library and scored in fp32, so its gap to sparsekit is the fp16
rounding of the weights alone.
llama.cpp computes its Q4_0 / Q8_0 dot products on activations quantized to 8 bits (its CPU path), so
its gap includes that. Without llama-cpp-python the GGUF column says why it is empty.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import pick, print_table  # noqa: E402  (after the path insert)

OUT = ROOT / "bench" / "results" / "export" / "readers.json"
MAG24 = {"prune": {"method": "magnitude", "pattern": "2:4"}}
#: name -> recipe (GGUF type the export picks is in the JSON)
VARIANTS = {
    "int8": [{"quantize": {"format": "int8"}}],
    "int4 g128": [{"quantize": {"format": "int4", "group_size": 128}}],
    "int4 g128 asym": [{"quantize": {"format": "int4", "group_size": 128, "symmetric": False}}],
    "2:4 + int4 g128": [MAG24, {"quantize": {"format": "int4", "group_size": 128}}],
}


def _ppl(nll_sum: float, tokens: int) -> float:
    return math.exp(nll_sum / tokens)


def llama_cpp_ppl(file: Path, windows, threads: int) -> dict:
    """Perplexity of a GGUF file in llama.cpp on the given `[n, seqlen]` token windows (same targets as sparsekit)."""
    import numpy as np

    try:
        from llama_cpp import Llama
    except ImportError:
        return {"ppl": None, "why": "llama-cpp-python is not installed (pip install llama-cpp-python)"}
    seqlen = windows.shape[1]
    llm = Llama(model_path=str(file), n_ctx=seqlen, n_batch=512, logits_all=True, verbose=False, n_threads=threads)
    nll, start = 0.0, time.perf_counter()
    for window in windows.tolist():
        llm.reset()
        llm.eval(window)
        logits = np.asarray(llm.scores[: seqlen - 1], dtype=np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        nll -= float(logp[np.arange(seqlen - 1), window[1:]].sum())
    seconds = time.perf_counter() - start
    del llm
    return {"ppl": _ppl(nll, windows.shape[0] * (seqlen - 1)), "seconds": seconds}


def torch_ppl(model, windows) -> float:
    from sparsekit.eval.perplexity import perplexity_from_ids

    return perplexity_from_ids(model, windows.reshape(-1), seqlen=windows.shape[1], progress=False).ppl


def run_variant(name: str, windows, workdir: Path, threads: int) -> dict:
    import sparsekit
    from sparsekit.export import export

    ck = workdir / name.replace(" ", "_").replace(":", "-")
    result = sparsekit.convert("smollm2-135m", VARIANTS[name], progress=False)
    sparsekit.save(result, ck)
    del result
    model, _ = sparsekit.load(ck)
    row: dict = {"variant": name, "recipe": VARIANTS[name], "sparsekit_ppl": torch_ppl(model, windows)}
    del model
    gguf_file = ck.with_suffix(".gguf")
    summary = export(ck, "gguf", gguf_file)
    row["gguf"] = {"types": summary["tensor_types"], "exact_quantized": summary["exact_quantized"],
                   "inexact_quantized": summary["inexact_quantized"],
                   "max_abs_error": max((t["max_abs_error"] for t in summary["tensors"].values()), default=0.0),
                   "bytes": gguf_file.stat().st_size, **llama_cpp_ppl(gguf_file, windows, threads)}
    ct = ck.with_name(ck.name + "-ct")
    summary = export(ck, "compressed-tensors", ct)
    row["compressed_tensors"] = {"schemes": summary["schemes"], "regrouped": summary["regrouped"],
                                 "max_abs_error": summary["max_abs_error"],
                                 "bytes": sum(f.stat().st_size for f in ct.glob("*.safetensors")),
                                 "ppl": torch_ppl(decompressed_model(ct), windows)}
    return row


def decompressed_model(folder: Path):
    """The compressed-tensors export as an fp32 model: its quantized weights decompressed by the library
    (`read_back`), every other tensor as stored. (transformers' own loader would do the same for symmetric
    exports; transformers 5.24 refuses asymmetric ones: it expects the zero points unpacked, while the
    library writes them packed, as vLLM reads them.)"""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from sparsekit.export.compressed_tensors import read_back

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float32)
    state = load_file(str(folder / "model.safetensors"))
    weights = {f"{name}.weight": w for name, w in read_back(folder).items()}
    plain = {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] in ("weight", "bias")}
    model.load_state_dict({k: v.float() for k, v in {**plain, **weights}.items()}, strict=False)
    model.tie_weights()
    return model.eval()


def table(data: dict) -> str:
    lines = ["| variant | sparsekit ppl | GGUF types | GGUF exact | llama.cpp ppl | compressed-tensors ppl (fp16) |",
             "|---|---|---|---|---|---|"]
    for r in data["rows"]:
        g, c = r["gguf"], r["compressed_tensors"]
        types = ", ".join(f"{t} {n}" for t, n in sorted(g["types"].items()))
        exact = f"{g['exact_quantized']}/{g['exact_quantized'] + g['inexact_quantized']}"
        llama = "–" if g["ppl"] is None else f"{g['ppl']:.3f}"
        lines.append(f"| {r['variant']} | {r['sparsekit_ppl']:.3f} | {types} | {exact} | {llama} | {c['ppl']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of variants (default: all)")
    p.add_argument("--limit", type=int, default=8, help="WikiText-2 windows of 2048 tokens [8]")
    p.add_argument("--threads", type=int, default=2, help="llama.cpp threads [2]")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--table", action="store_true", help="print the README table of --out and exit")
    args = p.parse_args(argv)
    if args.table:
        return print_table("export_readers", args.out, table)
    names = pick("export_readers", args.variants, VARIANTS)
    if names is None:
        return 2
    from sparsekit.data.datasets import wikitext2_text
    from sparsekit.models.loader import load_model
    from sparsekit.utils.env import versions

    _, tok = load_model("smollm2-135m")
    ids = tok(wikitext2_text(), return_tensors="pt", verbose=False).input_ids.reshape(-1)
    windows = ids[: args.limit * 2048].reshape(args.limit, 2048)
    data = {"model": "smollm2-135m", "windows": args.limit, "seqlen": 2048, "threads": args.threads,
            "versions": versions(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python bench/experiments/export_readers.py " + shlex.join(argv), "rows": []}
    try:
        import llama_cpp

        data["versions"]["llama_cpp_python"] = llama_cpp.__version__
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            row = run_variant(name, windows, Path(tmp), args.threads)
            data["rows"].append(row)
            print(f"{name:<16} sparsekit {row['sparsekit_ppl']:.3f}  llama.cpp {row['gguf']['ppl']}  "
                  f"compressed-tensors {row['compressed_tensors']['ppl']:.3f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
