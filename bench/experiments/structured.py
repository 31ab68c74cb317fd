"""Structured pruning study (seeds 000, 002 notes 8 and 9): perplexity and CPU decode speed vs parameters removed.

    python bench/experiments/structured.py                       # SmolLM2-135M, standard CPU protocol (hours)
    python bench/experiments/structured.py --configs blocks-bi-2,attn-6,mlp-2 --limit 8
    python bench/experiments/structured.py --plot-only

Configurations (`--configs`, default all):
- `blocks-{bi,angular,last}-{2,4,6}`: remove n whole blocks chosen by Block Influence, by the
  angular distance of a contiguous span, or the last n;
- `attn-{6,12}` / `mlp-{2,4}`: remove that many attention (resp. MLP) sublayers, lowest NRI first.
  On SmolLM2 an attention sublayer holds 884,736 parameters and an MLP 2,654,208 (3x), so attn-6 and
  mlp-2 (and attn-12, mlp-4) remove exactly the same number of parameters;
- `mixed-{5,10}`: NRI over both kinds under a budget of 5% (10%) of the block parameters (about what
  attn-6 / mlp-2 (attn-12 / mlp-4) remove); `cosine-{5,10}`: the same budgets ranked by the cosine score;
- `heads-{33,67}`, `channels-{25,50}`: width pruning (KV groups with their query heads; MLP channels).
- `search-{10,15,25}` / `search-nobias-{10,15,25}`: one `structured_search` over KV groups, MLP channels and
  sublayers removing that share of the model's parameters (`budget_of: model`, as the table counts), with / without bias compensation (`search-15` is
  `bench/recipes/structured-search-15.yaml`); `search-speed-{115,130}`: the same with a decode-speedup budget
  of 1.15x / 1.3x from the profiled cost model; `search-15-r12`: search-15 re-measured after each of 12 rounds
  instead of 4; `search-15-reconstruct`: search-15 followed by a `reconstruct` step (every block's kept weights
  fitted to the dense model's hidden states on the calibration windows; `-64`: fitted on 64 windows instead of
  32, twice the Adam steps; `-64x8`: and 8 epochs instead of 4, four times the steps:
  `bench/recipes/structured-search-15-reconstruct.yaml`); `search-fisher-15[-reconstruct]`: the
  same with `score: fisher` (each candidate's expected loss increase from the loss gradients);
  `search-speed-115-reconstruct` / `search-fisher-speed-115-reconstruct`: the 1.15x decode budget followed
  by a `reconstruct` step. The widths each search kept per block are drawn in
  `{out}/{model}_limit{N}_search_widths.png`.

Each configuration is applied to a fresh model (calibration: c4, `--nsamples` windows of 512 tokens,
seed 0), scored on WikiText-2 (seqlen 2048, the first `--limit` windows) and timed on CPU decode:
greedy generation of `--decode` tokens after a 16-token prompt, batch 1, the median of `--repeats`
runs after one warm-up, tokens per second. The dense model is the reference row. Writes
`{out}/{model}_limit{N}.json` (one record per configuration, saved after each; a stopped run resumes)
and `{out}/{model}_limit{N}.png` (perplexity vs parameters removed, one line per family).

Decode timings taken while other jobs share the CPU are not comparable, so every shrunk model is also
saved as a sparsekit checkpoint under `--save-dir` (not committed), and

    python bench/experiments/structured.py --retime         # when nothing else runs on the machine

re-times the decode of every configuration (dense included) in one pass from those checkpoints
(`sparsekit.load`: shapes restored without calibration; drop_blocks configurations without a
checkpoint are rebuilt from their recorded block indices) and records it as `decode` with
`"retimed": true`; `--retime --configs a,b` re-times only those, with dense again in the same pass. Each
record keeps the dense rate of the pass that timed it, and its speedup divides by that one.
`--table` prints the README's markdown table.

Two workers may share one JSON (e.g. one per core, with disjoint `--configs`): every write re-reads
the file under a lock and merges. Within one run, the NRI scores of the dense model are computed once
per sublayer kind and reused by later configurations (each candidate is scored alone on the unmodified
model with the same calibration windows, so the reuse is exact): attn-12 reuses attn-6's scores, and
mixed-* the union of the attention and MLP ones.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

import sparsekit.steps.structured as structured_steps
from sparsekit.api import compress, evaluate, load, save
from sparsekit.models.loader import load_model
from sparsekit.recipe import load_recipe
from sparsekit.steps.records import DropBlocksRecord, DropSublayersRecord, SearchRecord, StepRecord, WidthRecord
from sparsekit.utils.env import device_name, versions
from sparsekit.utils.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[2]


def configs() -> dict[str, list[dict]]:
    """Configuration name -> recipe."""
    out: dict[str, list[dict]] = {"dense": []}
    for method in ("bi", "angular", "last"):
        for n in (2, 4, 6):
            out[f"blocks-{method}-{n}"] = [{"drop_blocks": {"n": n, "method": method}}]
    for n in (6, 12):
        out[f"attn-{n}"] = [{"drop_sublayers": {"attention": n, "candidates": ["attention"]}}]
    for n in (2, 4):
        out[f"mlp-{n}"] = [{"drop_sublayers": {"mlp": n, "candidates": ["mlp"]}}]
    for pct in (5, 10):
        out[f"mixed-{pct}"] = [{"drop_sublayers": {"budget": pct / 100}}]
        out[f"cosine-{pct}"] = [{"drop_sublayers": {"budget": pct / 100, "score": "cosine"}}]
    for pct in (33, 67):
        out[f"heads-{pct}"] = [{"prune_heads": {"ratio": pct / 100}}]
    for pct in (25, 50):
        out[f"channels-{pct}"] = [{"prune_channels": {"ratio": pct / 100}}]
    for pct in (10, 15, 25):
        share = {"budget": pct / 100, "budget_of": "model"}  # of all parameters, as the table's column counts
        out[f"search-{pct}"] = [{"structured_search": share}]
        out[f"search-nobias-{pct}"] = [{"structured_search": {**share, "bias_compensation": False}}]
    out["search-15"] = load_recipe(str(ROOT / "bench" / "recipes" / "structured-search-15.yaml")).to_list()
    # re-measuring more often: 12 rounds of 1.25% each instead of 4 of 3.75%
    out["search-15-r12"] = [{"structured_search": {"budget": 0.15, "budget_of": "model", "rounds": 12}}]
    # the kept weights fitted afterwards to the dense model's hidden states, block by block (reported apart:
    # the option of "a short block-wise reconstruction after removal")
    out["search-15-reconstruct"] = out["search-15"] + [{"reconstruct": {}}]
    out["search-15-reconstruct-64"] = out["search-15"] + [{"reconstruct": {"nsamples": 64}}]  # twice the steps
    # a longer fit: 8 epochs over 64 windows (four times the Adam steps of the default)
    # (bench/recipes/structured-search-15-reconstruct.yaml; a test holds the two equal)
    out["search-15-reconstruct-64x8"] = out["search-15"] + [{"reconstruct": {"nsamples": 64, "epochs": 8}}]
    # scores from the loss gradients (what the blocks after a removal do with it) instead of block-relative energy
    out["search-fisher-15"] = [{"structured_search": {**out["search-15"][0]["structured_search"], "score": "fisher"}}]
    out["search-fisher-15-reconstruct"] = out["search-fisher-15"] + [{"reconstruct": {}}]
    for x in (115, 130):
        out[f"search-speed-{x}"] = [{"structured_search": {"speedup": x / 100}}]
    out["search-speed-115-reconstruct"] = out["search-speed-115"] + [{"reconstruct": {}}]
    out["search-fisher-speed-115-reconstruct"] = [{"structured_search": {"speedup": 1.15, "score": "fisher"}},
                                                  {"reconstruct": {}}]
    return out


def family(name: str) -> str:
    return name if name == "dense" else name.rsplit("-", 1)[0]


@torch.no_grad()
def decode_tokens_per_s(model, tokenizer, tokens: int, repeats: int) -> dict:
    """Median greedy-decode rate (batch 1, 16-token prompt) after one warm-up run."""
    prompt = torch.randint(3, tokenizer.vocab_size or 1000, (1, 16), generator=torch.Generator().manual_seed(0))
    kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    model.generate(prompt, **kwargs)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.generate(prompt, **kwargs)
        rates.append(tokens / (time.perf_counter() - start))
    return {"tokens_per_s": statistics.median(rates), "min": min(rates), "max": max(rates), "runs": len(rates)}


def merge_write(out_json: Path, data: dict, names: list[str]) -> dict:
    """Write the records `names` of `data`, every other record as it is on disk now: another worker may have
    recorded or re-timed it since this one read the file (read-merge-write under a lock)."""
    out_json.parent.mkdir(parents=True, exist_ok=True)
    with open(out_json.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out_json.exists():
            on_disk = json.loads(out_json.read_text())
            data["results"] = {**on_disk["results"], **{n: data["results"][n] for n in names}}
        write_json_atomic(out_json, data)
    return data


@contextlib.contextmanager
def nri_scores_reused():
    """Score each sublayer kind once per run (module docstring); the library function does the work."""
    original = structured_steps.sublayer_scores
    memo: dict[tuple, tuple[dict, dict, float | None]] = {}

    def per_kind(model, adapter, step, calib_ids, progress=True):
        scores, params, base = {}, {}, None
        for kind in step.candidates:
            key = (kind, step.score, step.nsamples, tuple(calib_ids.shape))
            if key not in memo:
                single = type(step)(**{**vars(step), "candidates": [kind]})
                memo[key] = original(model, adapter, single, calib_ids, progress)
            s, p, b = memo[key]
            scores.update(s)
            params.update(p)
            base = b if b is not None else base
        return scores, params, base

    structured_steps.sublayer_scores = per_kind
    try:
        yield
    finally:
        structured_steps.sublayer_scores = original


def run(args: argparse.Namespace) -> Path:
    with nri_scores_reused():
        return _run(args)


def _run(args: argparse.Namespace) -> Path:
    out_json = args.out / f"{Path(args.model).name}_limit{args.limit}.json"
    data = json.loads(out_json.read_text()) if out_json.exists() else {
        "model": args.model, "protocol": {"ppl": "wikitext2", "seqlen": args.seqlen, "limit": args.limit,
                                          "calibration": {"source": "c4", "nsamples": args.nsamples, "seqlen": 512,
                                                          "seed": 0},
                                          "decode": {"new_tokens": args.decode, "prompt": 16, "batch": 1,
                                                     "repeats": args.repeats}},
        "device": device_name(torch.device("cpu")), "versions": versions(),
        "command": "python bench/experiments/structured.py " + shlex.join(args.argv), "results": {}}
    table = configs()
    for name in args.configs:
        if out_json.exists():  # another worker may have finished it meanwhile
            data["results"] = {**json.loads(out_json.read_text())["results"], **data["results"]}
        if name in data["results"]:
            continue
        if (args.save_dir / name).exists():  # left by a run stopped before it recorded this configuration
            shutil.rmtree(args.save_dir / name)
        model, tokenizer = load_model(args.model, dtype="float32", device="cpu")
        params = sum(p.numel() for p in model.parameters())
        start = time.perf_counter()
        steps = []
        if table[name]:
            compressed = compress(model, table[name], tokenizer, nsamples=args.nsamples, seqlen=512, seed=0,
                                  device=args.device, data_dir=args.data_dir)
            steps = compressed.steps
        seconds = time.perf_counter() - start
        report = evaluate(model, tokenizer, ppl=["wikitext2"], seqlen=args.seqlen, limit=args.limit,
                          data_dir=args.data_dir)
        left = sum(p.numel() for p in model.parameters())
        data["results"][name] = {
            "family": family(name), "recipe": table[name], "ppl": report["ppl"]["wikitext2"],
            "tokens": report["tokens"]["wikitext2"], "params": left, "params_removed": params - left,
            "removed": [_taken_out(st) for st in steps], "compress_seconds": seconds,
            "decode": decode_tokens_per_s(model, tokenizer, args.decode, args.repeats), "date": report["date"]}
        if table[name]:
            save(compressed, args.save_dir / name)
        data = merge_write(out_json, data, [name])
        r = data["results"][name]
        print(f"{name:<18} ppl {r['ppl']:9.3f}  removed {r['params_removed']:>11,}  "
              f"decode {r['decode']['tokens_per_s']:.1f} tok/s", flush=True)
    plot(out_json)
    plot_widths(out_json)
    return out_json


def _taken_out(record: StepRecord) -> list | dict[str, int] | None:
    """What a structured step took out, as the results file stores it: the removed blocks or
    [block, sublayer] pairs, or the units each block kept (width steps); None for other steps."""
    if isinstance(record, (DropBlocksRecord, DropSublayersRecord)):
        return [list(r) if isinstance(r, tuple) else r for r in record.removed]
    if isinstance(record, WidthRecord):
        return record.kept
    if isinstance(record, SearchRecord):
        return {"widths": record.widths, "speedup": record.speedup}
    return None


def rebuild(args: argparse.Namespace, name: str, record: dict):
    """(model, tokenizer) of a finished configuration without calibration: its checkpoint, the base model
    for dense, or — for block removal — the recorded block indices cut out again."""
    if name == "dense":
        return load_model(args.model, dtype="float32", device="cpu")
    ckpt = args.save_dir / name
    if (ckpt / "sparsekit.json").is_file():
        return load(ckpt, dtype="float32")
    if record["family"].startswith("blocks-"):
        model, tokenizer = load_model(args.model, dtype="float32", device="cpu")
        compress(model, [{"drop_blocks": {"method": "explicit", "blocks": record["removed"][0]}}], tokenizer,
                 progress=False)
        return model, tokenizer
    raise SystemExit(f"{name}: no checkpoint in {ckpt}; re-run it (delete its record) to time it again")


def retime(args: argparse.Namespace, only: list[str] | None = None) -> Path:
    """Decode tokens/s of every finished configuration (or of `only`), re-measured in one pass (module
    docstring). Dense is always timed first in the pass, and every record keeps the dense rate of the pass
    that timed it (`dense_tokens_per_s`), so a speedup always divides two rates of one pass."""
    out_json = args.out / f"{Path(args.model).name}_limit{args.limit}.json"
    data = json.loads(out_json.read_text())
    old_dense = data["results"]["dense"]["decode"]["tokens_per_s"]
    stamped = [n for n, r in data["results"].items() if "dense_tokens_per_s" not in r["decode"]]
    for n in stamped:  # records of an earlier pass keep its dense rate
        data["results"][n]["decode"]["dense_tokens_per_s"] = old_dense
    names = ["dense"] + [n for n in data["results"] if n != "dense" and (only is None or n in only)]
    for name in names:
        record = data["results"][name]
        model, tokenizer = rebuild(args, name, record)
        left = sum(p.numel() for p in model.parameters())
        if left != record["params"]:
            raise SystemExit(f"{name}: rebuilt model has {left:,} parameters, the record says {record['params']:,}")
        record["decode"] = {**decode_tokens_per_s(model, tokenizer, args.decode, args.repeats), "retimed": True,
                            "threads": torch.get_num_threads()}
        record["decode"]["dense_tokens_per_s"] = data["results"]["dense"]["decode"]["tokens_per_s"]
        data = merge_write(out_json, data, [name] + stamped)
        print(f"{name:<18} decode {record['decode']['tokens_per_s']:.2f} tok/s", flush=True)
    return out_json


def table(out_json: Path) -> str:
    """The README table: perplexity, parameters removed and decode speed of each configuration."""
    data = json.loads(out_json.read_text())
    res = data["results"]
    dense = res["dense"]
    total = dense["params"]
    lines = ["| configuration | removed | params removed | WikiText-2 ppl | decode tok/s | speedup |",
             "|---|---|---|---|---|---|"]
    order = list(configs())
    for name, r in sorted(res.items(), key=lambda kv: order.index(kv[0])):
        what = "" if name == "dense" else _removed(r)
        speed = r["decode"]["tokens_per_s"] / r["decode"].get("dense_tokens_per_s", dense["decode"]["tokens_per_s"])
        lines.append(f"| {name} | {what} | {r['params_removed'] / 1e6:.1f} M ({100 * r['params_removed'] / total:.1f}%) "
                     f"| {r['ppl']:.2f} | {r['decode']['tokens_per_s']:.2f} | {speed:.2f}x |")
    return "\n".join(lines)


def _removed(record: dict) -> str:
    """Short description of what a configuration removed: block indices, sublayers by kind, or the
    widths kept (KV groups for heads-*, MLP channels for channels-*) per block."""
    parts = []
    for rec in record["removed"]:
        if not rec:
            continue
        if record["family"].startswith("blocks-"):
            parts.append("blocks " + ",".join(map(str, rec)))
        elif record["family"].startswith("search"):
            w = rec["widths"].values()
            kv = sorted(x["kv_groups"] for x in w if x["kv_groups"])
            ch = sorted(x["channels"] for x in w if x["channels"])
            gone = sum(x["kv_groups"] == 0 for x in w) + sum(x["channels"] == 0 for x in w)
            parts.append(f"KV groups {kv[0]}-{kv[-1]}, channels {ch[0]}-{ch[-1]} per block, {gone} sublayers removed"
                         if kv and ch else f"{gone} sublayers removed")
        elif record["family"] in ("attn", "mlp", "mixed", "cosine"):
            kinds: dict[str, list[int]] = {}
            for block, kind in rec:
                kinds.setdefault(kind, []).append(block)
            parts += [f"{'attn' if kind == 'attention' else kind} " + ",".join(map(str, sorted(blocks)))
                      for kind, blocks in sorted(kinds.items())]
        else:
            widths = sorted(set(rec.values() if isinstance(rec, dict) else rec))
            unit = "KV groups" if record["family"] == "heads" else "channels"
            parts.append(f"{unit} kept per block: " + (f"{widths[0]}" if len(widths) == 1 else
                                                       f"{widths[0]}-{widths[-1]}"))
    return "; ".join(parts)


def plot(out_json: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(out_json.read_text())
    res = data["results"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for fam in sorted({r["family"] for r in res.values()} - {"dense"}):
        rows = sorted((r for r in res.values() if r["family"] == fam), key=lambda r: r["params_removed"])
        ax.plot([r["params_removed"] / 1e6 for r in rows], [r["ppl"] for r in rows], marker="o", ms=3, label=fam)
    if "dense" in res:
        ax.axhline(res["dense"]["ppl"], color="gray", ls=":", lw=0.8, label=f"dense {res['dense']['ppl']:.2f}")
    ax.set_yscale("log")
    ax.set_xlabel("parameters removed (millions)")
    ax.set_ylabel(f"WikiText-2 perplexity (first {data['protocol']['limit']} x {data['protocol']['seqlen']} tokens)")
    ax.set_title(f"{data['model']}: structured pruning")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out_json.with_suffix(".png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_widths(out_json: Path) -> Path | None:
    """KV groups and MLP channels each search configuration kept, per block (0: the sublayer is gone)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = json.loads(out_json.read_text())["results"]
    runs = {n: r["removed"][0]["widths"] for n, r in res.items() if r["family"].startswith("search") and r["removed"]}
    if not runs:
        return None
    fig, (ax_kv, ax_ch) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    for name, w in sorted(runs.items()):
        blocks = sorted(w, key=int)
        x = [int(b) for b in blocks]
        ax_kv.plot(x, [w[b]["kv_groups"] for b in blocks], marker="o", ms=3, label=name)
        ax_ch.plot(x, [w[b]["channels"] or 0 for b in blocks], marker="o", ms=3, label=name)
    ax_kv.set_ylabel("KV groups kept")
    ax_ch.set_ylabel("MLP channels kept")
    ax_ch.set_xlabel("block")
    ax_kv.set_title("structured_search: widths kept per block (0: sublayer removed)")
    for ax in (ax_kv, ax_ch):
        ax.grid(True, alpha=0.3)
    ax_kv.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    path = out_json.with_name(out_json.stem + "_search_widths.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--configs", default=None, help="comma list [all]; with --retime: re-time only these (and dense)")
    p.add_argument("--limit", type=int, default=40, help="WikiText-2 windows per configuration [40]")
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--decode", type=int, default=64, help="new tokens per decode timing [64]")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "structured")
    p.add_argument("--save-dir", type=Path, default=ROOT / "results-local" / "structured",
                   help="where each shrunk model's checkpoint goes (for --retime) [results-local/structured]")
    p.add_argument("--plot-only", action="store_true")
    p.add_argument("--retime", action="store_true", help="re-time the decode of every finished configuration")
    p.add_argument("--table", action="store_true", help="print the README's markdown table")
    args = p.parse_args(argv)
    args.argv = argv
    only = None if args.configs is None else [c for c in args.configs.split(",") if c]
    args.configs = list(configs()) if only is None else only
    bad = sorted(set(args.configs) - set(configs()))
    if bad:
        p.error(f"unknown configurations {bad}; choose from {', '.join(configs())}")
    out_json = args.out / f"{Path(args.model).name}_limit{args.limit}.json"
    if args.table:
        print(table(out_json))
        return 0
    if args.retime:
        print(plot(retime(args, only)))
        return 0
    if args.plot_only:
        print(plot(out_json), plot_widths(out_json) or "")
        return 0
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
