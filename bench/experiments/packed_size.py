"""True size of converted checkpoints: do the packed layouts store the bits per weight they promise?

    python bench/experiments/packed_size.py            # SmolLM2-135M: 2:4 fp16, int4 g128, int4 g128 + 2:4

For each layout the model is converted with a recipe that needs no calibration (magnitude 2:4, RTN:
the bytes of a layout do not depend on how the mask and codes were chosen), saved with
`sparsekit.save`, loaded back with `sparsekit.load`, and the bytes of every packed projection's tensors
(what the safetensors file holds for it) are compared with the format's stated bits per weight
(docs/ARCHITECTURE.md §7: 2:4 fp16 9, int4 g128 4.125, int4 g128 + 2:4 3.125). SmolLM2's q/k/v/gate/up have
K = 576 = 4.5 groups of 128, so their short last group adds one scale per row (+0.3% there). Also
records the checkpoint's file sizes, and what loading it costs in memory: a fresh interpreter imports
sparsekit, transformers and the architecture's code, then `sparsekit.load`s the folder and runs one
token through it (weights the files hand over lazily are read then); the resident set it adds (VmRSS after minus before) and its
high-water mark above the start (VmHWM) are what a serving process pays for the model. Writes
`{out}/{model}.json`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import sparsekit
from sparsekit.nn.packed import PackedLinear
from sparsekit.utils.env import versions
from sparsekit.utils.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[2]
CASES = {
    "semi24_fp16": ([{"prune": {"method": "magnitude", "pattern": "2:4"}}], 9.0),
    "int4_g128": ([{"quantize": {"format": "int4", "group_size": 128}}], 4.125),
    "int4_g128_semi24": ([{"prune": {"method": "magnitude", "pattern": "2:4"}},
                          {"quantize": {"format": "int4", "group_size": 128}}], 3.125),
}


#: run in a fresh interpreter: MiB of resident memory before and after `sparsekit.load`, and the peak
_LOAD_PROBE = """
import json, sys, time
import torch
import sparsekit
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
# the libraries and the architecture's code imported first: what is measured is the model, not the imports
AutoModelForCausalLM._model_mapping[type(AutoConfig.from_pretrained(sys.argv[1]))]
AutoTokenizer.from_pretrained(sys.argv[1])
def status(key):
    return next(int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith(key))
before = status('VmRSS:')
start = time.perf_counter()
model, _ = sparsekit.load(sys.argv[1])  # held: measured while it lives
with torch.inference_mode():  # one token through every weight: tensors read lazily from the files count too
    model(input_ids=torch.tensor([[1]]))
print(json.dumps({'before_mib': before, 'after_mib': status('VmRSS:'), 'peak_mib': status('VmHWM:'),
                  'seconds': time.perf_counter() - start}))
"""


def load_memory(path: Path, checkout: Path | None = None) -> dict:
    """Resident memory that loading the checkpoint at `path` adds to a fresh process (Linux /proc); with
    `checkout`, the sparsekit of that source tree loads it (the interpreter starts there, so its package
    comes first on the path): the same checkpoint through another commit's loader."""
    out = subprocess.run([sys.executable, "-c", _LOAD_PROBE, str(path.resolve())], capture_output=True, text=True,
                         cwd=ROOT if checkout is None else checkout)
    if out.returncode != 0:
        raise RuntimeError(f"the load probe failed on {path}:\n{out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    res = {"added_mib": r["after_mib"] - r["before_mib"], "peak_above_start_mib": r["peak_mib"] - r["before_mib"],
           "seconds": r["seconds"]}
    if checkout is not None:
        res["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                       cwd=checkout).stdout.strip()
    return res


def measure(model_name: str, recipe: list, stated: float, workdir: Path, baseline: Path | None = None) -> dict:
    result = sparsekit.convert(model_name, recipe, packed_dtype=torch.float16, progress=False)
    path = Path(sparsekit.save(result, workdir / "ckpt"))
    model, _ = sparsekit.load(path)
    weights = stored = 0
    kinds = set()
    for _, module in model.named_modules():
        if isinstance(module, PackedLinear):
            kinds.add(module.kind)
            weights += module.in_features * module.out_features
            stored += sum(b.numel() * b.element_size() for n, b in module.named_buffers())
    bits = 8 * stored / weights
    files = {f.name: f.stat().st_size for f in sorted(path.iterdir()) if f.is_file()}
    return {"layouts": sorted(kinds), "packed_modules_weights": weights, "packed_bytes": stored,
            "bits_per_weight": bits, "stated_bits_per_weight": stated, "ratio_to_stated": bits / stated,
            "within_1_percent": abs(bits / stated - 1) <= 0.01, "files": files,
            "unpacked": sorted({v for v in result.packed.values() if v.startswith("dense")}),
            "tensor_files_mib": sum(v for k, v in files.items() if k.endswith(".safetensors")) / 2**20,
            "load": load_memory(path),
            **({"load_baseline": load_memory(path, baseline)} if baseline is not None else {})}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "packed_size")
    p.add_argument("--baseline-checkout", type=Path, default=None,
                   help="also load each checkpoint with the sparsekit of this source tree (e.g. a `git worktree` "
                        "of an older commit) and record its memory as load_baseline")
    args = p.parse_args(argv)
    if args.baseline_checkout is not None and not (args.baseline_checkout / "sparsekit" / "__init__.py").is_file():
        print(f"packed_size: --baseline-checkout {args.baseline_checkout} holds no sparsekit/ package", file=sys.stderr)
        return 2
    rows = {}
    for case in [c for c in args.cases.split(",") if c]:
        recipe, stated = CASES[case]
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            rows[case] = measure(args.model, recipe, stated, Path(tmp), args.baseline_checkout)
        rows[case]["seconds"] = time.perf_counter() - start
        r = rows[case]
        print(f"{case:<18} {r['bits_per_weight']:.4f} bits/weight (stated {stated}, x{r['ratio_to_stated']:.4f}); "
              f"load adds {r['load']['added_mib']:.0f} MiB for {r['tensor_files_mib']:.0f} MiB of tensor files",
              flush=True)
    out = args.out / f"{Path(args.model).name}.json"
    write_json_atomic(out, {"model": args.model, "cases": rows, "versions": versions(),
                            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            "command": "python bench/experiments/packed_size.py " + shlex.join(argv)})
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
