"""Pruning vs quantization (seed 000, seed 002 notes 1, 2, 5, 6, 15): perplexity against true model bytes.

    python bench/experiments/prune_vs_quant.py                      # the whole grid (resumable, hours on 2 cores)
    python bench/experiments/prune_vs_quant.py --sparsity 0,2:4 --formats bf16,int4
    python bench/experiments/prune_vs_quant.py --plot-only          # redraw the PNG from the JSON lines
    python bench/experiments/prune_vs_quant.py --table              # the README's markdown grid

Grid: sparsity {0, 25%, 50%, 2:4, 4:8} x format {bf16, int8, int4 g128, int3 g128, MXFP8, MXFP6, MXFP4,
FP6, ternary}, each point with the best method sparsekit has for it: SparseGPT for the mask and GPTQ
(act-order) for the codes — in one joint OBS sweep when both are present (SparseGPT paper §3.5) —
and nothing but the mask for bf16. Unpruned int8 (per channel) rounds to nearest: its rounding error
is already at the dense model's noise level (int8 RTN 20.42 vs dense 20.38 in the README's table), so
a calibration pass would cost minutes and buy nothing.

Every point is scored on WikiText-2 (seqlen 2048, the first `--limit` windows) and sized
in *true* bytes: projections at their packed bits (codes, scales, zero points, N:M positions or the
unstructured bitmask, `sparsekit.eval.size.packed_bits_per_weight`), everything else (embeddings,
norms, LM head) at 16 bits, i.e. the model as it would be stored in bf16 plus compressed projections.

Protocol (stated in the JSON): calibration c4, `--nsamples` windows of 512 tokens, seed 0; the
defaults (`--limit 4`, `--nsamples 8`) make the 45-point grid affordable on 2 CPU cores (about 90
core-minutes); the README's headline numbers use the standard protocol through `prune_table.py`.
The same windows score every point, so the grid ranks recipes; its absolute perplexities are those of
a short text and a small calibration set.

Writes `{out}/{model}_limit{N}.jsonl` (one line per finished point; a stopped run resumes and never
recomputes a finished point) and `{out}/{model}_limit{N}.png` (perplexity vs bytes, Pareto frontier).
Start the same command once per core to share the grid: each worker claims the next free point.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from sparsekit.api import compress, evaluate, storage_bits
from sparsekit.eval.size import compressed_bytes
from sparsekit.models.adapters import get_adapter
from sparsekit.models.loader import load_model
from sparsekit.prune.patterns import parse_pattern
from sparsekit.utils.env import device_name, versions

ROOT = Path(__file__).resolve().parents[2]
SPARSITIES = ("0", "0.25", "0.5", "2:4", "4:8")
FORMATS = ("bf16", "int8", "int4", "int3", "mxfp8", "mxfp6", "mxfp4", "fp6", "ternary")
#: formats whose round-to-nearest error is already negligible: unpruned, they skip calibration
RTN_ENOUGH = ("int8",)


def recipe_for(sparsity: str, fmt: str) -> list[dict]:
    """The recipe of one grid point (empty for the dense bf16 baseline)."""
    steps: list[dict] = []
    pattern = parse_pattern(sparsity) if ":" in sparsity else None
    if pattern is not None:
        steps.append({"prune": {"method": "sparsegpt", "pattern": str(pattern)}})
    elif float(sparsity) > 0:
        steps.append({"prune": {"method": "sparsegpt", "sparsity": float(sparsity)}})
    if fmt != "bf16" and not steps and fmt in RTN_ENOUGH:
        steps.append({"quantize": {"format": fmt, "method": "rtn"}})
    elif fmt != "bf16":
        steps.append({"quantize": {"format": fmt, "method": "gptq", "joint": bool(steps)}})
    return steps


def point_key(sparsity: str, fmt: str) -> str:
    return f"{sparsity}|{fmt}"


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both bytes and perplexity (lower is better)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def read_points(out_jsonl: Path) -> list[dict]:
    """The finished points of a grid file (none when it does not exist yet)."""
    if not out_jsonl.exists():
        return []
    return [json.loads(line) for line in out_jsonl.read_text().splitlines() if line.strip()]


def finished(out_jsonl: Path, protocol: dict) -> set[str]:
    """Keys of the points already in `out_jsonl`; refuses a file written under another protocol."""
    rows = read_points(out_jsonl)
    other = [r for r in rows if r["protocol"] != protocol]
    if other:
        raise SystemExit(f"{out_jsonl} holds points of another protocol ({other[0]['protocol']}, this run: "
                         f"{protocol}); use another --out or the same options")
    return {point_key(r["sparsity"], r["format"]) for r in rows}


def claim(folder: Path, key: str) -> Path | None:
    """Take point `key` for this process (a file holding its pid); None when a live process holds it.

    Several workers may run the same command on one grid: each takes the next point nobody holds, so
    the cores split the grid without a plan, and a claim left by a killed worker is taken over.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (key.replace("|", "_").replace(":", "-") + ".pid")
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            text = path.read_text().strip()
            if not text.isdigit():
                return None  # being written by a worker that claimed it this instant
            try:
                os.kill(int(text), 0)
                return None
            except ProcessLookupError:
                path.unlink(missing_ok=True)  # its worker died: take the point over
                continue
            except PermissionError:
                return None
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return path
    return None


def run(args: argparse.Namespace) -> Path:
    out_jsonl = args.out / f"{Path(args.model).name}_limit{args.limit}.jsonl"
    claims = out_jsonl.with_suffix(".claims")
    protocol = {"seqlen": args.seqlen, "limit": args.limit,
                "calibration": {"source": "c4", "nsamples": args.nsamples, "seqlen": args.calib_seqlen, "seed": 0}}
    done = finished(out_jsonl, protocol)
    todo = [(s, f) for s in args.sparsity for f in args.formats if point_key(s, f) not in done]
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (sparsity, fmt) in enumerate(todo, 1):
        key = point_key(sparsity, fmt)
        if key in finished(out_jsonl, protocol):  # another worker finished it meanwhile
            continue
        held = claim(claims, key)
        if held is None:
            print(f"[{i}/{len(todo)}] sparsity {sparsity} x {fmt}: another worker has it", flush=True)
            continue
        recipe = recipe_for(sparsity, fmt)
        print(f"[{i}/{len(todo)}] sparsity {sparsity} x {fmt}: {recipe}", flush=True)
        model, tokenizer = load_model(args.model, dtype="float32", device="cpu")
        start = time.perf_counter()
        storage: dict[str, float] = {}
        if recipe:
            compressed = compress(model, recipe, tokenizer, nsamples=args.nsamples, seqlen=args.calib_seqlen,
                                  seed=0, device=args.device, data_dir=args.data_dir)
            storage = storage_bits(get_adapter(model), compressed.steps, compressed.masks, dense_bits=16)
        seconds = time.perf_counter() - start
        report = evaluate(model, tokenizer, ppl=["wikitext2"], seqlen=args.seqlen, limit=args.limit,
                          data_dir=args.data_dir)
        row = {"sparsity": sparsity, "format": fmt, "recipe": recipe, "ppl": report["ppl"]["wikitext2"],
               "tokens": report["tokens"]["wikitext2"], "bytes": compressed_bytes(model, storage, dense_bits=16),
               "compress_seconds": seconds, "protocol": protocol,
               "model": args.model, "device": device_name(torch.device("cpu")), "versions": versions(),
               "date": report["date"],
               "command": "python bench/experiments/prune_vs_quant.py " + shlex.join(args.argv)}
        with out_jsonl.open("a") as fh:  # one whole line per finished point: a crash loses at most the current one
            fh.write(json.dumps(row) + "\n")
        held.unlink(missing_ok=True)
        print(f"    ppl {row['ppl']:.3f}  bytes {row['bytes']:,}  ({seconds:.0f} s)", flush=True)
    try:
        claims.rmdir()  # only when empty: no other worker holds a point
    except OSError:
        pass
    plot(out_jsonl)
    return out_jsonl


def plot(out_jsonl: Path) -> Path:
    """Perplexity vs bytes, one marker per format, one colour per sparsity, the Pareto frontier drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_points(out_jsonl)
    fig, ax = plt.subplots(figsize=(8, 5))
    markers = dict(zip(FORMATS, "os^vD<>ph"))
    colours = dict(zip(SPARSITIES, plt.cm.viridis([0.0, 0.25, 0.5, 0.75, 0.95])))
    for r in rows:
        ax.scatter(r["bytes"] / 2 ** 20, r["ppl"], marker=markers.get(r["format"], "x"),
                   color=colours.get(r["sparsity"], "gray"), s=36, zorder=3)
    front = [rows[i] for i in pareto([(r["bytes"], r["ppl"]) for r in rows])]
    ax.plot([r["bytes"] / 2 ** 20 for r in front], [r["ppl"] for r in front], "-", color="crimson", lw=1.2,
            zorder=2, label="Pareto frontier")
    for r in front:
        ax.annotate(f"{r['sparsity']}/{r['format']}", (r["bytes"] / 2 ** 20, r["ppl"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    for f, m in markers.items():
        if any(r["format"] == f for r in rows):
            ax.scatter([], [], marker=m, color="gray", label=f)
    for s, c in colours.items():
        if any(r["sparsity"] == s for r in rows):
            ax.scatter([], [], marker="s", color=c, label=f"sparsity {s}")
    ax.set_yscale("log")
    ax.set_xlabel("true model size (MiB: packed projections + bf16 rest)")
    limit = rows[0]["protocol"]["limit"] if rows else "?"
    ax.set_ylabel(f"WikiText-2 perplexity (first {limit} x 2048 tokens)")
    ax.set_title(f"{rows[0]['model'] if rows else ''}: pruning x quantization")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out_jsonl.with_suffix(".png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(out_jsonl: Path) -> str:
    """Markdown grid: one row per sparsity, one column per format, "perplexity (MiB)" per point; the
    points on the Pareto frontier in bold."""
    rows = read_points(out_jsonl)
    front = {point_key(rows[i]["sparsity"], rows[i]["format"])
             for i in pareto([(r["bytes"], r["ppl"]) for r in rows])}
    cell = {point_key(r["sparsity"], r["format"]): r for r in rows}
    formats = [f for f in FORMATS if any(r["format"] == f for r in rows)]
    sparsities = [s for s in SPARSITIES if any(r["sparsity"] == s for r in rows)]
    lines = ["| sparsity | " + " | ".join(formats) + " |", "|---|" + "---|" * len(formats)]
    for sp in sparsities:
        vals = []
        for f in formats:
            r = cell.get(point_key(sp, f))
            text = "–" if r is None else f"{r['ppl']:.1f} ({r['bytes'] / 2 ** 20:.0f})"
            vals.append(f"**{text}**" if r is not None and point_key(sp, f) in front else text)
        lines.append(f"| {sp} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--sparsity", default=",".join(SPARSITIES), help="comma list of 0..1 fractions or N:M")
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--limit", type=int, default=4, help="WikiText-2 windows per point [4]")
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--nsamples", type=int, default=8, help="calibration windows [8]")
    p.add_argument("--calib-seqlen", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "prune_vs_quant")
    p.add_argument("--plot-only", action="store_true")
    p.add_argument("--table", action="store_true", help="print the markdown grid of the finished points")
    args = p.parse_args(argv)
    args.argv = argv
    args.sparsity = [s.strip() for s in args.sparsity.split(",") if s.strip()]
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = sorted(set(args.formats) - set(FORMATS))
    if bad:
        p.error(f"unknown formats {bad}; choose from {', '.join(FORMATS)}")
    for s in args.sparsity:
        try:
            ok = ":" in s and parse_pattern(s).structured or (":" not in s and 0 <= float(s) < 1)
        except ValueError:
            ok = False
        if not ok:
            p.error(f"sparsity {s!r} is neither a fraction in [0, 1) nor an N:M pattern")
    if args.table:
        print(table(args.out / f"{Path(args.model).name}_limit{args.limit}.jsonl"))
        return 0
    if args.plot_only:
        print(plot(args.out / f"{Path(args.model).name}_limit{args.limit}.jsonl"))
        return 0
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
