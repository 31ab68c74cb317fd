"""How much of the C4 sample a healing run sees: the documents' draw against packed windows.

    python bench/experiments/heal_windows.py --out bench/results/heal_windows.json     # seconds
    python bench/experiments/heal_windows.py --table --out bench/results/heal_windows.json

Healing reads `tokens / seqlen` windows of C4 (`sparsekit.recipe.Heal`). With `windows: documents` they are
drawn as calibration draws them (SparseGPT's sampler: a document picked uniformly among those longer than a
window, then a random window in it), so short documents never appear and a document drawn twice repeats
tokens; with `windows: packed` every document is used once per pass (`sparsekit.data.packed_windows`). This
counts, for the healed recipe's draw (655,360 tokens in windows of 512, seed 1, SmolLM2's tokenizer), the
sample's documents and tokens, those a documents' draw can reach, and the distinct token positions each draw
holds. Writes the counts (and the command, date) to `--out`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a plain checkout: the package is the tree itself
    sys.path.insert(0, str(ROOT))

from bench.common import print_table, write_result  # noqa: E402  (after the path insert)


def documents_draw(docs: list[list[int]], n: int, seqlen: int, seed: int) -> tuple[int, list[list[int]]]:
    """(distinct (document, position) pairs, the windows) of the `n` windows `calibration_windows` draws from
    these tokenized documents (its sampler, `document_draw`)."""
    from sparsekit.data.calibration import document_draw

    draws = document_draw([len(ids) for ids in docs], n, seqlen, seed)
    seen = {(i, p) for i, start in draws for p in range(start, start + seqlen)}
    return len(seen), [docs[i][start:start + seqlen] for i, start in draws]


def table(result: dict) -> str:
    d = result
    return "\n".join([
        "| draw | windows | tokens drawn | distinct token positions | of the sample's tokens |", "|---|---|---|---|---|",
        f"| documents | {d['windows']} | {d['tokens']:,} | {d['documents_distinct']:,} | "
        f"{d['documents_distinct'] / d['sample_tokens']:.0%} |",
        f"| packed | {d['windows']} | {d['tokens']:,} | {d['packed_distinct']:,} | "
        f"{d['packed_distinct'] / d['sample_tokens']:.0%} |", "",
        f"The sample: {d['documents']:,} C4 documents, {d['sample_tokens']:,} tokens; longer than {d['seqlen']} tokens "
        f"(the documents' draw reaches only these): {d['eligible_documents']:,} documents, "
        f"{d['eligible_tokens']:,} tokens ({d['eligible_tokens'] / d['sample_tokens']:.0%})."])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="whose tokenizer [smollm2-135m]")
    p.add_argument("--tokens", type=int, default=655_360, help="the heal's budget [655360]")
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--seed", type=int, default=1, help="the heal's window seed [1]")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "heal_windows.json")
    p.add_argument("--table", action="store_true", help="print the table of --out and exit")
    args = p.parse_args(argv)
    if args.table:
        return print_table("heal_windows", args.out, table)
    if args.seqlen < 2 or args.tokens < args.seqlen:
        p.error(f"--seqlen must be >= 2 and --tokens at least one window (--seqlen), got {args.seqlen} / {args.tokens}")
    from sparsekit.data.calibration import _tokenize, calibration_texts, packed_windows
    from sparsekit.models.loader import load_model

    _, tokenizer = load_model(args.model)
    texts = calibration_texts("c4", args.data_dir)
    docs = _tokenize(tokenizer, texts)
    lengths = [len(ids) for ids in docs]
    n = args.tokens // args.seqlen
    packed = packed_windows(tokenizer, "c4", nsamples=n, seqlen=args.seqlen, seed=args.seed, texts=texts)
    # a packed pass holds every token once (tests/data: test_packed_windows_use_every_token_once_a_pass), so its
    # windows' positions are distinct while one pass lasts: the documents joined by end-of-text, cut
    sep = 0 if getattr(tokenizer, "eos_token_id", None) is None else 1
    one_pass = sum(x + sep for x in lengths if x) // args.seqlen
    result = {"model": args.model, "windows": n, "seqlen": args.seqlen, "seed": args.seed, "tokens": n * args.seqlen,
              "documents": len(lengths), "sample_tokens": sum(lengths),
              "eligible_documents": sum(1 for x in lengths if x > args.seqlen),
              "eligible_tokens": sum(x for x in lengths if x > args.seqlen),
              "documents_distinct": documents_draw(docs, n, args.seqlen, args.seed)[0],
              "packed_distinct": min(n, one_pass) * args.seqlen, "packed_shape": list(packed.shape),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": "python bench/experiments/heal_windows.py " + shlex.join(argv)}
    print(table(result))
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
