"""How long SparseGPT 2:4 takes on the standard protocol, before and after the faster calibration pipeline.

    python bench/experiments/calib_speed.py                    # -> bench/results/cpu/calib_speed.json (~60 min)
    python bench/experiments/calib_speed.py --variants bf16-b8 --limit 8
    python bench/experiments/calib_speed.py --table            # the README table from the JSON

The pruning itself (`sparsekit.compress(model, "sparsegpt-2:4")`, calibration c4 128 x 512 seed 0, 2 threads)
is timed for each variant in a fresh process, one after the other, so nothing else of this script runs
during a timing:

- `before`: the commit before the pipeline work (`--before`, default 628da88), checked out in a temporary
  git worktree and imported from there: every projection builds its own X^T X, one window per forward.
- `fp32-b1`: this tree, shared statistics (q/k/v and gate/up read one input: one X^T X), one window per forward.
- `fp32-b8`: + 8 windows per forward (`calib_batch_size`).
- `bf16-b8`: + the block forwards under bf16 autocast (`calib_dtype="bfloat16"`; statistics stay fp32).

Each process saves the pruned weights; once every timing is done, each is scored on WikiText-2 (seqlen 2048,
the first `--limit` windows), and a sha256 of its keep-masks tells whether the masks changed at all.
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

from bench.common import pick, print_table  # noqa: E402  (after the path insert)

OUT = ROOT / "bench" / "results" / "cpu" / "calib_speed.json"
RECIPE = "sparsegpt-2:4"
#: variant -> keyword arguments of compress (None: the `before` worktree, which has none of them)
VARIANTS: dict[str, dict | None] = {
    "before": None,
    "fp32-b1": {"calib_batch_size": 1, "calib_dtype": "float32"},
    "fp32-b8": {"calib_batch_size": 8, "calib_dtype": "float32"},
    "bf16-b8": {"calib_batch_size": 8, "calib_dtype": "bfloat16"},
}

#: what each timing process runs (argv: kwargs as JSON, weights file, threads, data dir or '')
_CHILD = """
import hashlib, json, sys, time, torch
import sparsekit
kwargs, weights, threads, data_dir = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] or None
torch.set_num_threads(threads)
start = time.perf_counter()
c = sparsekit.compress("smollm2-135m", "%s", progress=False, data_dir=data_dir, **kwargs)
wall = time.perf_counter() - start
h = hashlib.sha256()
for k in sorted(c.masks):
    h.update(k.encode()); h.update(c.masks[k].cpu().numpy().tobytes())
torch.save(c.model.state_dict(), weights)
print(json.dumps({"compress_seconds": wall, "prune_seconds": c.steps[0].seconds, "masks_sha256": h.hexdigest(),
                  "calibration": c.calibration}))
""" % RECIPE


def _worktree(rev: str, where: Path) -> Path:
    path = where / f"before-{rev}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True,
                   capture_output=True)
    return path


def time_variant(name: str, tree: Path, threads: int, weights: Path, data_dir: str | None) -> dict:
    """Compress in a fresh interpreter that imports sparsekit from `tree`; the timings it printed."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(VARIANTS[name] or {}), str(weights),
                           str(threads), data_dir or ""], env=env, cwd=tree, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"variant {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def score(weights: Path, limit: int, data_dir: str | None) -> float:
    import torch

    import sparsekit
    from sparsekit.models.loader import load_model

    model, tokenizer = load_model("smollm2-135m", dtype="float32", device="cpu")
    model.load_state_dict(torch.load(weights))
    report = sparsekit.evaluate(model, tokenizer, ppl=["wikitext2"], limit=limit, data_dir=data_dir, progress=False)
    return report["ppl"]["wikitext2"]


def table(data: dict) -> str:
    rows = data["rows"]
    base = next((r for r in rows if r["variant"] == "before"), None)
    lines = ["| variant | what changes | prune step (s) | vs before | masks as before | WikiText-2 ppl |",
             "|---|---|---|---|---|---|"]
    what = {"before": f"commit {data['before']}", "fp32-b1": "shared X^T X (q/k/v, gate/up)",
            "fp32-b8": "+ 8 windows per forward", "bf16-b8": "+ bf16 forwards"}
    for r in rows:
        ratio = f"{r['prune_seconds'] / base['prune_seconds']:.0%}" if base else "-"
        same = ("yes" if r["masks_sha256"] == base["masks_sha256"] else "no") if base else "-"
        lines.append(f"| {r['variant']} | {what[r['variant']]} | {r['prune_seconds']:.1f} | {ratio} | {same} | "
                     f"{r['ppl']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="calib_speed.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list (default: all)")
    p.add_argument("--before", default="628da88", help="the commit timed as 'before' [628da88]")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=40, help="WikiText-2 windows [40: the standard CPU protocol]")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--table", action="store_true", help="print the README table of --out and exit")
    args = p.parse_args(argv)
    if args.table:
        return print_table("calib_speed", args.out, table)
    names = pick("calib_speed", args.variants, VARIANTS)
    if names is None:
        return 2
    from bench.kernels.bench_cpu_gemm import cpu_name
    from sparsekit.utils.env import versions
    from sparsekit.utils.io import write_json_atomic

    data = {"recipe": RECIPE, "before": args.before, "threads": args.threads, "cpu": cpu_name()[0],
            "calibration": {"source": "c4", "nsamples": 128, "seqlen": 512, "seed": 0},
            "protocol": {"ppl": "wikitext2", "seqlen": 2048, "limit": args.limit}, "versions": versions(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python bench/experiments/calib_speed.py " + shlex.join(argv), "rows": []}
    with tempfile.TemporaryDirectory(prefix="calib_speed_") as tmp:
        tmp = Path(tmp)
        rows = []
        try:
            for name in names:  # every timing first: the scoring below would otherwise share the CPU with none of them
                tree = _worktree(args.before, tmp) if name == "before" else ROOT
                weights = tmp / f"{name}.pt"
                rows.append({"variant": name, **time_variant(name, tree, args.threads, weights, args.data_dir)})
                print(f"{name:<8} prune {rows[-1]['prune_seconds']:.1f} s", flush=True)
        finally:
            if (tmp / f"before-{args.before}").exists():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(tmp / f"before-{args.before}")], check=False, capture_output=True)
        for row in rows:
            row["ppl"] = score(tmp / f"{row['variant']}.pt", args.limit, args.data_dir)
            print(f"{row['variant']:<8} ppl {row['ppl']:.3f}", flush=True)
            data["rows"].append(row)
            write_json_atomic(args.out, data)
    print(table(data))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
