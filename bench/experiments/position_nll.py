"""Where in a 2048-token window a compressed model loses: WikiText-2 perplexity by position, against a reference.

    python bench/experiments/position_nll.py --models dense=smollm2-135m,base=DIR,healed=DIR \\
        --pairs healed/base --out bench/results/position_nll.json        # ~3 min a model at 2 threads
    python bench/experiments/position_nll.py --table --out bench/results/position_nll.json

Healing trains on windows of 512 tokens (`heal.seqlen`) while the standard protocol scores windows of 2048, so
three quarters of the scored tokens sit at positions the heal never trained. Each model here is scored on the
standard protocol's windows (WikiText-2, the first `--limit` windows of `--seqlen`; `sparsekit.eval.position_nll`)
and its mean NLL is kept per bucket of positions (`--buckets`: the first position of each). The table gives each
bucket's perplexity and its ratio to the reference model's (the first of `--models` unless `--reference`), and,
for each `--pairs B/A`, B's perplexity over A's per bucket: what a step between A and B (e.g. a heal) changed at
each distance into the window. A `--models` entry is `label=model`, the model a short name, a Hugging Face folder
or a sparsekit checkpoint (`nm_study.py --save-dir` writes them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a plain checkout: the package is the tree itself
    sys.path.insert(0, str(ROOT))

from bench.common import print_table, write_result  # noqa: E402  (after the path insert)

OUT = ROOT / "bench" / "results" / "position_nll.json"


def parse_models(text: str) -> dict[str, str]:
    """`label=model,...` as an ordered mapping; ValueError naming the entry that is not one."""
    models: dict[str, str] = {}
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        label, sep, model = entry.partition("=")
        if not sep or not label or not model or label in models or "/" in label:
            raise ValueError(f"--models takes label=model entries with distinct labels without '/', got {entry!r}")
        models[label] = model
    if not models:
        raise ValueError("--models names no model")
    return models


def bucket_means(nll: list[float], starts: list[int]) -> list[float]:
    """The mean of `nll` over each bucket [starts[i], starts[i + 1]) (the last to the end)."""
    bounds = [*starts, len(nll)]
    return [sum(nll[a:b]) / (b - a) for a, b in zip(bounds, bounds[1:])]


def parse_buckets(text: str, positions: int) -> list[int]:
    """The first positions of `--buckets`; ValueError unless they rise from 0 and stay below `positions`."""
    try:
        starts = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        starts = []
    if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= positions:
        raise ValueError(f"--buckets takes increasing first positions starting at 0 and below {positions} "
                         f"(seqlen - 1), got {text!r}")
    return starts


def _span(starts: list[int], positions: int, i: int) -> str:
    end = starts[i + 1] if i + 1 < len(starts) else positions
    return f"{starts[i]}-{end - 1}"


def table(data: dict) -> str:
    starts, positions, ref = data["buckets"], data["protocol"]["seqlen"] - 1, data["reference"]
    spans = [_span(starts, positions, i) for i in range(len(starts))]
    lines = [f"| model | ppl | {' | '.join(f'positions {s}' for s in spans)} |",
             "|---|---|" + "---|" * len(spans)]
    base = data["models"][ref]["bucket_nll"]
    for label, m in data["models"].items():
        cells = [f"{math.exp(v):.2f}" + ("" if label == ref else f" (x{math.exp(v - r):.3f})")
                 for v, r in zip(m["bucket_nll"], base)]
        lines.append(f"| {label} | {m['ppl']:.2f} | {' | '.join(cells)} |")
    for pair in data.get("pairs", []):
        b, a = pair.split("/")
        ratios = [math.exp(x - y) for x, y in zip(data["models"][b]["bucket_nll"], data["models"][a]["bucket_nll"])]
        lines.append(f"| {b} / {a} | x{data['models'][b]['ppl'] / data['models'][a]['ppl']:.3f} | "
                     + " | ".join(f"x{r:.3f}" for r in ratios) + " |")
    return "\n".join(lines) + (f"\n\nIn brackets: the ratio to {ref}'s perplexity in the same positions; a row B / A: "
                               "B's perplexity over A's.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="position_nll.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="dense=smollm2-135m", help="label=model, comma list [dense=smollm2-135m]")
    p.add_argument("--reference", default=None, help="the label the ratios are to [the first of --models]")
    p.add_argument("--pairs", default="", help="B/A label pairs: B's perplexity over A's per bucket, comma list")
    p.add_argument("--buckets", default="0,128,512,1024", help="first position of each bucket [0,128,512,1024]")
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--limit", type=int, default=40, help="WikiText-2 windows scored [40: the standard protocol]")
    p.add_argument("--threads", type=int, default=None, help="torch threads [torch's default]")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--table", action="store_true", help="print the table of --out and exit")
    args = p.parse_args(argv)
    if args.table:
        return print_table("position_nll", args.out, table)
    if args.seqlen < 2 or args.limit < 1:
        p.error(f"--seqlen must be >= 2 and --limit >= 1, got {args.seqlen} / {args.limit}")
    try:
        models = parse_models(args.models)
        starts = parse_buckets(args.buckets, args.seqlen - 1)
    except ValueError as e:
        p.error(str(e))
    reference = args.reference or next(iter(models))
    pairs = [x.strip() for x in args.pairs.split(",") if x.strip()]
    bad = [x for x in [reference, *(q for pair in pairs for q in pair.split("/"))] if x not in models]
    if bad or any(pair.count("/") != 1 for pair in pairs):
        p.error(f"--reference and --pairs (B/A) name labels of --models ({', '.join(models)}); "
                f"not {sorted(set(bad)) or pairs}")

    import torch

    from sparsekit.data import wikitext2_text
    from sparsekit.eval import position_nll
    from sparsekit.models.loader import load_model
    from sparsekit.utils.env import versions

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    text = wikitext2_text("test", args.data_dir)
    results, ids = {}, None
    for label, name in models.items():
        start = time.perf_counter()
        model, tokenizer = load_model(name, dtype="float32", device="cpu")
        if ids is None:  # one token stream for every model: the first model's tokenizer (checkpoints keep theirs)
            if tokenizer is None:
                p.error(f"{name} has no tokenizer; list a model with one first")
            ids = tokenizer(text, return_tensors="pt", verbose=False).input_ids
        nll = position_nll(model, ids, seqlen=args.seqlen, limit=args.limit, desc=label).tolist()
        mean = sum(nll) / len(nll)
        results[label] = {"model": name, "ppl": math.exp(mean), "nll": mean, "bucket_nll": bucket_means(nll, starts),
                          "seconds": time.perf_counter() - start}
        print(f"{label}: ppl {math.exp(mean):.3f}", flush=True)
        del model
    data = {"protocol": {"dataset": "wikitext2", "seqlen": args.seqlen, "limit": args.limit},
            "buckets": starts, "reference": reference, "pairs": pairs, "models": results,
            "threads": torch.get_num_threads(), "versions": versions(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python bench/experiments/position_nll.py " + shlex.join(argv)}
    write_result(args.out, data)
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
