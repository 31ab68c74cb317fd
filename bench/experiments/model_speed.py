"""Whole-model speed of packed formats: dense vs 2:4 vs int4 vs int4 + 2:4 on a Llama-3-8B-shaped model.

    python bench/experiments/model_speed.py                         # GPU: Llama-3-8B shapes, bf16, random weights
    python bench/experiments/model_speed.py --preset tiny --device cpu --prefill 32 --decode 4   # a smoke run
    python3 bench/experiments/model_speed.py --layers 4 --prefill 512 --decode 32 --repeats 3  # short GPU run

The model is built from a config with random weights (no download; speed does not depend on the values,
docs/ARCHITECTURE.md §5): `llama3-8b` is hidden 4096, MLP 14336, 32 layers, 32 heads / 8 KV heads, vocab 128256.
Each variant is converted with data-free recipes (the bytes and kernels do not depend on how a mask or
code was chosen): magnitude 2:4 -> semi24, int4 g128 RTN -> int4, both -> int4_semi24 (`PackedLinear` modules),
then benchmarked with `sparsekit.bench.benchmark_model` (prefill latency, decode tokens/s, peak memory,
NVML joules/token). `--backend` picks the packed kernels: `auto` (the CUDA sparse-tensor-core kernels
for 2:4 layers when sparsekit._C is built, Triton otherwise), `triton` or `cuda`. Writes
`{out}/model_speed_{preset}_{device}[_{backend}].json` with the device and versions, rewritten after each
variant (a run cut short keeps the variants it finished); `--jsonl PATH` also appends one line per variant as it
is measured (what scripts/gpu_check.sh brings back). On a GPU the record says whether the Triton kernels
autotuned their tiles (SPARSEKIT_TRITON_AUTOTUNE): fixed tiles decode int4 about 2x slower on an H200.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path and (ROOT / "sparsekit").is_dir():  # a plain checkout: no install needed
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from sparsekit.api import convert  # noqa: E402
from sparsekit.bench.model import benchmark_model  # noqa: E402
from sparsekit.eval.size import weight_bytes  # noqa: E402
from sparsekit.utils.device import resolve_device  # noqa: E402
from sparsekit.utils.env import device_name, versions  # noqa: E402
from sparsekit.utils.io import write_json_atomic  # noqa: E402

PRESETS = {
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, head_dim=128, vocab_size=128256, max_position_embeddings=8192),
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=32, vocab_size=512, max_position_embeddings=512),
}
VARIANTS = {
    "dense": [],
    "semi24": [{"prune": {"method": "magnitude", "pattern": "2:4"}}],
    "int4_g128": [{"quantize": {"format": "int4", "group_size": 128}}],
    "int4_g128_semi24": [{"prune": {"method": "magnitude", "pattern": "2:4"}},
                         {"quantize": {"format": "int4", "group_size": 128}}],
}


def preset_config(preset: str, layers: int | None = None) -> dict:
    """The preset's config, with `layers` decoder blocks instead of its own number when given."""
    return {**PRESETS[preset], **({"num_hidden_layers": layers} if layers else {})}


def random_model(preset: str, dtype: torch.dtype, device: torch.device, layers: int | None = None):
    """A Llama-architecture model with random (normal, std 0.02) weights in the preset's shapes."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    with device:
        model = AutoModelForCausalLM.from_config(LlamaConfig(**preset_config(preset, layers)), dtype=dtype)
    return model.eval()


def triton_autotune(device: torch.device) -> bool | None:
    """Whether the Triton kernels on `device` autotune their tiles; None off a GPU. Imported here: Triton is an
    optional extra, and a CPU run must not need it."""
    if device.type != "cuda":
        return None
    from sparsekit.kernels.packed_gemm import autotuning

    return autotuning(device)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="llama3-8b", choices=sorted(PRESETS))
    p.add_argument("--layers", type=int, default=None,
                   help="decoder blocks (default: the preset's; fewer for a short run, same layer shapes)")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--prefill", type=int, default=2048)
    p.add_argument("--decode", type=int, default=128)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="static cache + torch.compile (GPU)")
    p.add_argument("--backend", default="auto", choices=["auto", "triton", "cuda", "reference"],
                   help="kernels of the packed modules [auto]")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "model_speed")
    p.add_argument("--jsonl", type=Path, default=None,
                   help="also append one JSON line per variant to this file as each is measured")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    if device.type == "cpu" and args.preset != "tiny":
        p.error("the llama3-8b preset needs a GPU (run it through scripts/gpu_check.sh); use --preset tiny on a CPU")
    if args.layers is not None and args.layers < 1:
        p.error(f"--layers must be >= 1, got {args.layers}")
    unknown = [v for v in args.variants.split(",") if v and v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    suffix = "" if args.backend == "auto" else f"_{args.backend}"
    out = args.out / f"model_speed_{args.preset}_{device.type}{suffix}.json"
    meta = {"preset": args.preset, "config": preset_config(args.preset, args.layers), "dtype": args.dtype,
            "backend": args.backend, "device": device_name(device), "versions": versions(),
            "triton_autotune": triton_autotune(device),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python bench/experiments/model_speed.py " + shlex.join(argv)}
    rows: dict[str, dict] = {}
    for name in [v for v in args.variants.split(",") if v]:
        model = random_model(args.preset, dtype, device, args.layers)
        result = convert(model, VARIANTS[name], packed_dtype=dtype, backend=args.backend, progress=False) \
            if VARIANTS[name] else None
        packed = sorted(set(result.packed.values())) if result else []
        rows[name] = {"packed": packed, "weight_bytes": weight_bytes(model),
                      **benchmark_model(model, prefill=args.prefill, decode=args.decode, batch=args.batch,
                                        repeats=args.repeats, compile=args.compile)}
        r = rows[name]
        print(f"{name:<18} prefill {r['prefill']['median_ms']:9.2f} ms  decode {r['decode']['tokens_per_s']:9.2f} tok/s"
              f"  weights {r['weight_bytes'] / 2 ** 30:6.2f} GiB  peak {r['peak_mem_bytes'] / 2 ** 30:6.2f} GiB",
              flush=True)
        dense = rows.get("dense")
        r["decode_speedup_vs_dense"] = r["decode"]["tokens_per_s"] / dense["decode"]["tokens_per_s"] if dense else None
        # written after each variant: a run that a time limit cuts short keeps what it finished
        write_json_atomic(out, {**meta, "rows": rows})
        if args.jsonl is not None:
            with args.jsonl.open("a") as f:
                f.write(json.dumps({"variant": name, **meta, "rows": {name: r}}) + "\n")
        del model, result
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
