"""Module-specific pruning study (seed 001): prune one projection type at a time and watch perplexity.

    python bench/experiments/module_sensitivity.py --limit 8          # SmolLM2-135M, ~1.5 h on 2 CPU cores
    python bench/experiments/module_sensitivity.py --plot-only        # redraw the PNGs from the JSON
    python bench/experiments/module_sensitivity.py --table --limit 4  # the README's table

For each module type (q, k, v, o, gate, up, down, all attention, all MLP) and each pruning rate
(10%..90%), every block's projections of that type are pruned with Wanda (per-output-row ranking,
unstructured) and WikiText-2 perplexity is measured (seqlen 2048, the first `--limit` windows).

Protocol note: to make 81 configurations affordable, Wanda's statistics (sum of x^2 per input
channel, docs/ARCHITECTURE.md §9 calibration: c4, 128 x 512, seed 0) are collected *once* on the dense model
(one-shot, not sequential); each configuration then only re-masks the weights and re-evaluates.

Writes `{out}/{model}_wanda_limit{N}.json` (one record per configuration, saved after each, so an
interrupted run resumes) and two plots: pruning rate vs perplexity and pruned weights vs perplexity.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sparsekit.calib.engine import LayerwiseCalibrator
from sparsekit.calib.stats import LinearStats
from sparsekit.data.calibration import calibration_windows
from sparsekit.data.datasets import wikitext2_text
from sparsekit.eval.perplexity import perplexity
from sparsekit.models.adapters import get_adapter
from sparsekit.models.loader import load_model
from sparsekit.prune.methods import prune_weight
from sparsekit.utils.env import device_name, versions
from sparsekit.utils.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[2]
TYPES = ("q", "k", "v", "o", "gate", "up", "down", "attention", "mlp")
RATES = tuple(round(0.1 * i, 1) for i in range(1, 10))


def _members(adapter, kind: str) -> list[tuple[int, str]]:
    """(block, block-relative name) of every projection of a type ('q', ..., or a group)."""
    out = []
    for i in range(adapter.num_blocks):
        for rel in adapter.spec.projections:
            if adapter.role(rel) == kind or adapter.group(rel) == kind:
                out.append((i, rel))
    return out


def run(args: argparse.Namespace) -> dict:
    out_json = args.out / f"{Path(args.model).name}_wanda_limit{args.limit}.json"
    data = json.loads(out_json.read_text()) if out_json.exists() else None
    model, tokenizer = load_model(args.model, dtype="float32", device="cpu")
    adapter = get_adapter(model)
    text = wikitext2_text("test", args.data_dir)
    if data is None:
        data = {"model": args.model, "method": "wanda (one-shot statistics, per-row, unstructured)",
                "protocol": {"ppl": "wikitext2", "seqlen": args.seqlen, "limit": args.limit,
                             "calibration": {"source": "c4", "nsamples": args.nsamples, "seqlen": args.calib_seqlen,
                                             "seed": 0}},
                "device": device_name(torch.device("cpu")), "versions": versions(),
                "command": "python bench/experiments/module_sensitivity.py " + shlex.join(args.argv),
                "total_projection_weights": sum(lin.weight.numel() for i in range(adapter.num_blocks)
                                                for lin in adapter.linears(i).values()),
                "results": []}
        start = time.perf_counter()
        dense = perplexity(model, tokenizer, text, seqlen=args.seqlen, limit=args.limit, desc="dense")
        data["dense_ppl"] = dense.ppl
        data["tokens"] = dense.tokens
        data["dense_seconds"] = time.perf_counter() - start
        write_json_atomic(out_json, data)
    done = {(r["type"], r["rate"]) for r in data["results"]}

    ids = calibration_windows(tokenizer, "c4", nsamples=args.nsamples, seqlen=args.calib_seqlen, seed=0,
                              data_dir=args.data_dir)
    stats = {}
    calib = LayerwiseCalibrator(model, adapter=adapter, device=args.device, sequential=False)
    for ctx in calib.blocks(ids):
        for rel, s in ctx.stats.items():
            stats[(ctx.index, rel)] = LinearStats(s.sum_sq.cpu(), s.count)
    original = {key: adapter.linears(key[0])[key[1]].weight.detach().clone() for key in stats}

    todo = [(kind, rate) for kind in args.types for rate in args.rates if (kind, rate) not in done]
    for kind, rate in tqdm(todo, desc="module study", unit="config"):
        members = _members(adapter, kind)
        pruned = 0
        for key in members:
            linear = adapter.linears(key[0])[key[1]]
            new, mask = prune_weight("wanda", original[key], stats[key], rate)
            linear.weight.data.copy_(new)
            pruned += int((~mask).sum())
        result = perplexity(model, tokenizer, text, seqlen=args.seqlen, limit=args.limit, progress=False)
        for key in members:
            adapter.linears(key[0])[key[1]].weight.data.copy_(original[key])
        data["results"].append({"type": kind, "rate": rate, "modules": len(members), "pruned_weights": pruned,
                                "model_sparsity": pruned / data["total_projection_weights"], "ppl": result.ppl})
        data["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_json_atomic(out_json, data)
    plot(out_json)
    return data


def plot(out_json: Path) -> list[Path]:
    """Pruning rate vs perplexity and pruned weights vs perplexity, one line per module type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(out_json.read_text())
    kinds = [k for k in TYPES if any(r["type"] == k for r in data["results"])]
    files = []
    for x_key, x_label, suffix in (("rate", "pruning rate of the module type", "rate"),
                                   ("pruned_weights", "pruned weights (millions)", "weights")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for kind in kinds:
            rows = sorted((r for r in data["results"] if r["type"] == kind), key=lambda r: r["rate"])
            xs = [r[x_key] / (1e6 if x_key == "pruned_weights" else 1) for r in rows]
            style = "--" if kind in ("attention", "mlp") else "-"
            ax.plot(xs, [r["ppl"] for r in rows], style, marker="o", ms=3, label=kind)
        ax.axhline(data["dense_ppl"], color="gray", lw=0.8, ls=":", label=f"dense {data['dense_ppl']:.2f}")
        ax.set_yscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"WikiText-2 perplexity (first {data['protocol']['limit']} x {data['protocol']['seqlen']} tokens)")
        ax.set_title(f"{data['model']}: Wanda on one module type")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(ncol=2, fontsize=8)
        fig.tight_layout()
        path = out_json.with_name(out_json.stem + f"_{suffix}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files


def table(out_json: Path, rates: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)) -> str:
    """Markdown table: WikiText-2 perplexity per module type (rows) at a few pruning rates (columns)."""
    data = json.loads(out_json.read_text())
    got = {(r["type"], r["rate"]): r for r in data["results"]}
    head = "| module type | weights pruned at 50% | " + " | ".join(f"{int(r * 100)}%" for r in rates) + " |"
    rows = [head, "|---|---|" + "---|" * len(rates)]
    for kind in TYPES:
        if (kind, 0.5) not in got:
            continue
        cells = " | ".join(f"{got[(kind, r)]['ppl']:.2f}" if (kind, r) in got else "–" for r in rates)
        rows.append(f"| {kind} | {got[(kind, 0.5)]['pruned_weights']:,} | {cells} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--limit", type=int, default=8, help="WikiText-2 windows per configuration [8]")
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--calib-seqlen", type=int, default=512)
    p.add_argument("--types", default=",".join(TYPES))
    p.add_argument("--rates", default=",".join(str(r) for r in RATES))
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "module_sensitivity")
    p.add_argument("--plot-only", action="store_true")
    p.add_argument("--table", action="store_true", help="print the README's markdown table of the results")
    args = p.parse_args(argv)
    args.argv = argv
    args.types = [t for t in args.types.split(",") if t]
    args.rates = [round(float(r), 4) for r in args.rates.split(",") if r]
    bad = sorted(set(args.types) - set(TYPES))
    if bad:
        p.error(f"unknown module types {bad}; choose from {', '.join(TYPES)}")
    if args.table:
        print(table(args.out / f"{Path(args.model).name}_wanda_limit{args.limit}.json"))
        return 0
    if args.plot_only:
        for f in plot(args.out / f"{Path(args.model).name}_wanda_limit{args.limit}.json"):
            print(f)
        return 0
    data = run(args)
    print(f"{len(data['results'])} configurations -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
