"""SmolLM2-135M on this CPU: decode speed of every packed layout next to its accuracy and true size.

    python bench/experiments/cpu_decode.py                 # every variant, one subprocess each (~15 min)
    python bench/experiments/cpu_decode.py --table         # the README table from the JSON
    python bench/experiments/cpu_decode.py --model llama-3.2-1b-random --variants "dense fp32,int8,int4 g128,2:4 + int4,int4 g128 + int8 head,2:4 + int4 + int8 head" --decode 32 --repeats 3

Each variant is compressed with a data-free recipe of its layout (decode speed depends on the bytes and
the kernel, not on how a mask or a code was chosen), converted to packed modules, and timed with
`sparsekit.benchmark` twice (`sparsekit bench`, then `sparsekit bench --compile`: prefill latency,
decode tokens/s with the KV cache, batch 1 (`--batch B`: B sequences at once, so every projection multiplies B
tokens a step; tokens/s then counts all of them), under inference mode; the compiled run adds a static cache
and torch.compile, where the packed op's C++ CPU kernel runs with no Python frame; peak resident
memory of the process). Every variant runs in a fresh process, so that the peak memory
is its own; a packed variant is built and saved as a checkpoint by one process and loaded from it by the
process that times it (`sparsekit bench D` after `sparsekit compress ... --out D`), so its peak memory is
what a deployment holds, not what converting the fp32 model costs. Accuracy is not re-measured: the WikiText-2 perplexity of the best recipe of the same
layout is read from the committed result files of the README's tables (standard CPU protocol), and
the table names the file.

| variant | layout | recipe timed | perplexity from |
|---|---|---|---|
| dense fp32 | - | - | dense |
| dense fp32 (sparsekit GEMV) | - | every nn.Linear on sparsekit's fp32 GEMV (`use_dense_kernels(model, "all")`) | dense |
| dense bf16 | - | model in bf16 | - (not measured) |
| dense bf16 (sparsekit GEMV) | - | the bf16 model, every nn.Linear on sparsekit's GEMV | - (not measured) |
| int8 | int8 | int8 RTN per channel | int8 RTN |
| int4 g128 | int4 | int4 RTN g128 | int4 GPTQ g128 |
| mxfp4 | mxfp4 | MXFP4 RTN | MXFP4 RTN |
| 2:4 | semi24 (bf16 values) | magnitude 2:4 | SparseGPT 2:4 |
| 2:4 bf16 model | semi24 (bf16 values) in a bf16 model: bf16 activations | magnitude 2:4 | SparseGPT 2:4, evaluated in bf16 |
| 2:4 + int4 | int4_semi24 | magnitude 2:4 + int4 RTN g128 | SparseGPT 2:4 + int4 (joint) |
| int4 g128 a8, mxfp4 a8, 2:4 + int4 a8, int8 a8 | as above, on the opt-in backend 'cpu_a8' (int8 activations) | as above | the same recipes scored with 'cpu_a8' (a8_accuracy.py) |
| int4 g128 + int8 head, 2:4 + int4 + int8 head | as above + int8 (LM head) | as above + the head step `INT8_HEAD` | the same recipes with the head step (head_accuracy.py) |

Embeddings and norms are not compressed: they run in the model's dtype (fp32, bf16 for the bf16
variants) and count in `bytes` at that width; so does the tied LM head, except in the `+ int8 head`
variants, whose head is untied and packed in int8 per channel (the `lm_head` column of every row says
what it runs in). A packed variant's fp32 or bf16 head runs sparsekit's GEMV (`sparsekit.nn.DenseLinear`, as
every model that `sparsekit.load` loads on the CPU: "sparsekit GEMV" in that column); the dense rows are torch's
kernels throughout, and `dense fp32 (sparsekit GEMV)` / `dense bf16 (sparsekit GEMV)` the same models on
sparsekit's GEMV, to tell the kernel's share of a ratio from the compression's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import INT8_HEAD, pick, print_table  # noqa: E402  (after the path insert)

OUT = ROOT / "bench" / "results" / "cpu" / "smollm2_decode.json"
#: --model -> default output; `llama-3.2-1b-random` is Llama-3.2-1B's configuration with random weights (no
#: download; a speed run needs real shapes, not trained values): there the projections and the 1 GB fp32
#: tied LM head dominate the bytes of a token, where SmolLM2's non-weight work is a large share
MODELS = {"smollm2-135m": OUT, "llama-3.2-1b-random": ROOT / "bench" / "results" / "cpu" / "llama32_1b_random_decode.json"}
#: Llama-3.2-1B's config.json (RoPE scaling left out: it changes no shape and no cost)
LLAMA32_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                  num_key_value_heads=8, head_dim=64, vocab_size=128256, max_position_embeddings=131072,
                  rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True, bos_token_id=128000,
                  eos_token_id=128001)
MAG24 = {"prune": {"method": "magnitude", "pattern": "2:4"}}
INT4 = {"quantize": {"format": "int4", "group_size": 128}}
MXFP4 = {"quantize": {"format": "mxfp4"}}
A8 = "bench/results/cpu/a8_accuracy.json"
A8_INT8 = "bench/results/cpu/a8_accuracy_int8.json"
HEAD = "bench/results/cpu/head_accuracy.json"
#: name -> (recipe or None, packed value dtype, model dtype, accuracy file or None, backend); an accuracy
#: file `FILE#RECIPE#KEY` is the perplexity `KEY` of a row of a8_accuracy.py's or head_accuracy.py's results
VARIANTS = {
    "dense fp32": (None, None, "float32", "bench/results/smollm2-135m_dense_limit40.json", "auto"),
    # the same model with every projection and its tied head on sparsekit's fp32 GEMV (sparsekit.nn.DenseLinear,
    # the kernel a converted model's fp32 head runs on): what part of a packed variant's ratio the kernel alone gives
    "dense fp32 (sparsekit GEMV)": (None, None, "float32", "bench/results/smollm2-135m_dense_limit40.json", "auto"),
    "dense bf16": (None, None, "bfloat16", None, "auto"),
    # and in bf16 (on a CPU without bf16 instructions torch's bf16 GEMV reads slower than its fp32 one)
    "dense bf16 (sparsekit GEMV)": (None, None, "bfloat16", None, "auto"),
    "int8": ([{"quantize": {"format": "int8"}}], None, "float32", "bench/results/quant/smollm2-135m_int8-rtn_limit40.json",
             "auto"),
    "int4 g128": ([INT4], None, "float32", "bench/results/quant/smollm2-135m_int4-gptq_limit40.json", "auto"),
    "mxfp4": ([MXFP4], None, "float32", "bench/results/quant/smollm2-135m_mxfp4-rtn_limit40.json", "auto"),
    "2:4": ([MAG24], "bfloat16", "float32", "bench/results/prune/smollm2-135m_sparsegpt-2-4_limit40.json", "auto"),
    # the same layout in a bf16 model: its activations reach the kernel in bf16 (AVX512_BF16 dot products where
    # the CPU has them); read it against "dense bf16". Its perplexity: a SparseGPT 2:4 checkpoint evaluated in bf16
    # (docs/cpu-kernels.md, "2:4 in a bf16 model")
    "2:4 bf16 model": ([MAG24], "bfloat16", "bfloat16", "bench/results/cpu/smollm2_sparsegpt24_eval_bf16.json", "auto"),
    # int4 (+ 2:4) in a bf16 model: bf16 activations into the kernels' bf16 dot products (one bf16 part each,
    # gemm_nibble_bf16.cpp / gemm_avx512_bf16.cpp); read them against "dense bf16" (perplexity in bf16 not measured)
    "int4 g128 bf16 model": ([INT4], None, "bfloat16", None, "auto"),
    "2:4 + int4 bf16 model": ([MAG24, INT4], None, "bfloat16", None, "auto"),
    "2:4 + int4": ([MAG24, INT4], None, "float32",
                   "bench/results/quant/smollm2-135m_sparsegpt-2-4-int4-joint_limit40.json", "auto"),
    "int4 g128 a8": ([INT4], None, "float32", f"{A8}#int4-gptq#a8", "cpu_a8"),
    "mxfp4 a8": ([MXFP4], None, "float32", f"{A8}#mxfp4-rtn#a8", "cpu_a8"),
    "2:4 + int4 a8": ([MAG24, INT4], None, "float32", f"{A8}#sparsegpt-2:4+int4-joint#a8", "cpu_a8"),
    "int8 a8": ([{"quantize": {"format": "int8"}}], None, "float32", f"{A8_INT8}#int8-rtn#a8", "cpu_a8"),
    "int4 g128 + int8 head": ([INT4, INT8_HEAD], None, "float32", f"{HEAD}#int4-gptq#int8_head", "auto"),
    "2:4 + int4 + int8 head": ([MAG24, INT4, INT8_HEAD], None, "float32",
                               f"{HEAD}#sparsegpt-2:4+int4-joint#int8_head", "auto"),
}
#: the dense variants timed with every nn.Linear on sparsekit's GEMV
ON_GEMV = {"dense fp32 (sparsekit GEMV)", "dense bf16 (sparsekit GEMV)"}


def perplexity_of(acc: str) -> float:
    """The WikiText-2 perplexity an accuracy entry of VARIANTS names."""
    path, _, row = acc.partition("#")
    data = json.loads((ROOT / path).read_text())
    if not row:
        return data["ppl"]["wikitext2"]
    recipe, _, key = row.rpartition("#")
    return next(r["ppl"][key] for r in data["rows"] if r["recipe"] == recipe)


def load(model_name: str, dtype: str):
    """(model, tokenizer or None) on the CPU in `dtype`."""
    import torch

    from sparsekit.models.loader import load_model

    if model_name == "llama-3.2-1b-random":
        from transformers import AutoModelForCausalLM, LlamaConfig

        from sparsekit.utils.pages import place_if_asked

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(LlamaConfig(**LLAMA32_1B), dtype=getattr(torch, dtype)).eval()
        place_if_asked(model)  # as load_model does (SPARSEKIT_HUGE_PAGES=1: sparsekit.utils.pages)
        return model, None
    return load_model(model_name, dtype=dtype, device="cpu")


def build_variant(name: str, out_dir: Path, model_name: str = "smollm2-135m") -> None:
    """Compress and convert one variant and save it as a packed checkpoint (the process that times it loads
    that, as `sparsekit bench D` does, so its peak memory is a deployment's, not a conversion's)."""
    import torch

    import sparsekit

    recipe, packed_dtype, dtype, _, _ = VARIANTS[name]
    model, tokenizer = load(model_name, dtype)
    result = sparsekit.convert(model, recipe, tokenizer, progress=False,
                               packed_dtype=None if packed_dtype is None else getattr(torch, packed_dtype))
    sparsekit.save(result, out_dir, tokenizer=tokenizer)


def run_variant(name: str, prefill: int, decode: int, repeats: int, model_name: str = "smollm2-135m",
                checkpoint: Path | None = None, batch: int = 1) -> dict:
    """Time one variant in this process: the dense model as loaded, a packed one from `checkpoint` (what
    `build_variant` saved)."""
    import torch

    import sparsekit
    from sparsekit.nn import PackedLinear

    recipe, _, dtype, _, backend = VARIANTS[name]
    packed: dict = {}
    if recipe is None:
        model, _ = load(model_name, dtype)
        if name in ON_GEMV:
            from sparsekit.nn import use_dense_kernels

            use_dense_kernels(model, "all")
    else:
        model, _ = sparsekit.load(checkpoint, dtype=dtype)  # the variant's model dtype ('auto' is fp32 on a CPU)
        packed = {n: m.kind for n, m in model.named_modules() if isinstance(m, PackedLinear)}
    if backend != "auto":
        from sparsekit.nn import set_backend

        set_backend(model, backend)
    report = sparsekit.benchmark(model, prefill=prefill, decode=decode, batch=batch, repeats=repeats)
    compiled = sparsekit.benchmark(model, prefill=prefill, decode=decode, batch=batch, repeats=repeats, compile=True)
    kinds = sorted({v for v in packed.values()})
    return {"variant": name, "recipe": recipe, "layouts": kinds, "model_dtype": dtype, "backend": backend,
            "lm_head": report["lm_head"],
            "tokens_per_s": report["tokens_per_s"], "prefill_ms": report["latency_ms"],
            "peak_mem_bytes": report["peak_mem_bytes"], "bytes": report["bytes"], "device": report["device"],
            "threads": torch.get_num_threads(), "bench": report["bench"], "from_checkpoint": recipe is not None,
            "compiled": {"tokens_per_s": compiled["tokens_per_s"], "prefill_ms": compiled["latency_ms"],
                         "peak_mem_bytes": compiled["peak_mem_bytes"], "bench": compiled["bench"]}}


def table(data: dict) -> str:
    rows = data["rows"]
    # "vs dense": against dense fp32, or dense bf16 in a run of bf16 variants alone ("–" in a run with neither)
    dense = next((r for r in rows if r["variant"] == "dense fp32"), None) or next(
        (r for r in rows if r["variant"] == "dense bf16"), None)
    # with batch B every projection multiplies B tokens a step, and tokens/s counts the B sequences' tokens
    b = data.get("batch", 1)
    tag, pre = (f" (batch {b})", f"{b} x {data['prefill']}") if b != 1 else ("", f"{data['prefill']}")
    lines = [f"| variant | LM head | WikiText-2 ppl (result file) | weights MiB | decode tok/s eager{tag} | vs dense | decode "
             f"tok/s compiled{tag} | vs dense compiled | prefill {pre} ms | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = VARIANTS[r["variant"]][3] if data["model"] == "smollm2-135m" else None  # random weights: no accuracy
        # the file named without backticks: README tests read backticked result paths as rows of their tables
        ppl = "–" if acc is None else f"{perplexity_of(acc):.2f} ({acc.partition('#')[0]})"
        c = r["compiled"]["tokens_per_s"]
        vs, vs_c = ((f"x{r['tokens_per_s'] / dense['tokens_per_s']:.2f}", f"x{c / dense['compiled']['tokens_per_s']:.2f}")
                    if dense else ("–", "–"))
        lines.append(f"| {r['variant']} | {r.get('lm_head', '–')} | {ppl} | {r['bytes'] / 2 ** 20:.1f} | {r['tokens_per_s']:.1f} | "
                     f"{vs} | {c:.1f} | {vs_c} | {r['prefill_ms']:.0f} | {r['peak_mem_bytes'] / 2 ** 20:.0f} |")
    return "\n".join(lines)


#: the environment that changes what a run measures (the variants' processes inherit it)
ENV_KEYS = ("SPARSEKIT_HUGE_PAGES", "OMP_NUM_THREADS")


def _env_prefix() -> str:
    """`KEY=value ` for each of `ENV_KEYS` set here: part of the command that re-runs a result."""
    return "".join(f"{k}={shlex.quote(os.environ[k])} " for k in ENV_KEYS if k in os.environ)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of variants (default: all)")
    p.add_argument("--prefill", type=int, default=128)
    p.add_argument("--decode", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=1,
                   help="sequences decoded together: each projection then multiplies that many tokens a step [1]")
    p.add_argument("--model", choices=list(MODELS), default="smollm2-135m")
    p.add_argument("--out", type=Path, default=None, help="[bench/results/cpu/<model>_decode.json]")
    p.add_argument("--table", action="store_true", help="print the README table of --out and exit")
    # internal: build one variant's checkpoint (--build DIR), or time one variant and print its JSON (--one)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--build", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out = args.out or MODELS[args.model]
    if args.one is not None and args.build is not None:
        build_variant(args.one, args.build, args.model)
        return 0
    if args.one is not None:
        print(json.dumps(run_variant(args.one, args.prefill, args.decode, args.repeats, args.model, args.checkpoint,
                                     args.batch)))
        return 0
    if args.table:
        return print_table("cpu_decode", args.out, table)
    names = pick("cpu_decode", args.variants, VARIANTS)
    if names is None:
        return 2
    from sparsekit.utils.env import versions

    if args.batch < 1:
        print(f"cpu_decode: --batch must be >= 1, got {args.batch}", file=sys.stderr)
        return 2
    data = {"model": args.model, "prefill": args.prefill, "decode": args.decode, "repeats": args.repeats,
            "batch": args.batch,
            "versions": versions(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": _env_prefix() + "python bench/experiments/cpu_decode.py " + shlex.join(argv), "rows": []}
    for name in names:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", name, "--prefill", str(args.prefill),
               "--decode", str(args.decode), "--repeats", str(args.repeats), "--model", args.model,
               "--batch", str(args.batch)]
        with tempfile.TemporaryDirectory(prefix="cpu_decode_") as tmp:
            # a packed variant: built and saved in one process, loaded and timed in another
            steps = [cmd + ["--build", tmp], cmd + ["--checkpoint", tmp]] if VARIANTS[name][0] is not None else [cmd]
            for step in steps:
                proc = subprocess.run(step, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    return proc.returncode
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        data["rows"].append(row)
        print(f"{name:<12} {row['tokens_per_s']:6.1f} tok/s (compiled {row['compiled']['tokens_per_s']:6.1f})  prefill {row['prefill_ms']:6.0f} ms  "
              f"{row['bytes'] / 2 ** 20:6.1f} MiB  peak {row['peak_mem_bytes'] / 2 ** 20:6.0f} MiB", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(table(data))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
