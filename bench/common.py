"""What the scripts of bench/kernels and bench/experiments share: the `--table` mode that prints a README
table from the committed JSON, the `--variants` list check, and the driver of the perplexity
experiments that score one row per recipe. (Scripts put the repository root on sys.path, so `bench`
imports as a namespace package from a plain checkout.)"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

#: the recipe step that packs the LM head in int8 per channel (untied from the input embeddings):
#: head_accuracy.py measures what it costs, cpu_decode.py what it gains
INT8_HEAD = {"quantize": {"format": "int8", "targets": [], "modules": ["lm_head"]}}


def print_table(script: str, out: Path, table: Callable[[dict], str]) -> int:
    """Print `table(json of out)`; exit status 2 with one line when `out` was never measured."""
    if not out.is_file():
        print(f"{script}: {out} does not exist; run the measurement first", file=sys.stderr)
        return 2
    print(table(json.loads(out.read_text())))
    return 0


def write_result(out: Path, result: dict) -> None:
    """Write a measurement's JSON to `out` (its folder made) and say where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out}")


def pick(script: str, text: str, known: Iterable[str]) -> list[str] | None:
    """The comma-separated names of `text`, or None (after one line on stderr) if any is not in `known`."""
    known = list(known)
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in known]
    if unknown:
        print(f"{script}: unknown variant(s) {unknown}; known: {', '.join(known)}", file=sys.stderr)
        return None
    return names


def recipe_rows(script: str, doc: str, recipes: Iterable[str], out: Path, table: Callable[[dict], str],
                run: Callable[[str, int, str | None], dict], line: Callable[[dict], str],
                argv: list[str] | None = None, extra: dict[str, Any] | None = None,
                unavailable: Callable[[], str | None] | None = None) -> int:
    """The command line of an experiment that scores each of `recipes` on the standard CPU protocol:
    `--recipes`, `--limit` (40), `--data-dir`, `--out`, `--table`. `run(name, limit, data_dir)` measures
    one row; the JSON (protocol, `extra`, versions, date, command, rows) is rewritten after every row,
    so an interrupted run keeps what it measured; `line(row)` is the progress line of a row.
    `unavailable()`: why this machine cannot measure (exit 2 before anything runs; `--table` still works)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    recipes = list(recipes)
    p = argparse.ArgumentParser(prog=f"{script}.py", description=doc.split("\n\n")[0])
    p.add_argument("--recipes", default=",".join(recipes), help="comma list (default: all)")
    p.add_argument("--limit", type=int, default=40, help="WikiText-2 windows [40: the standard CPU protocol]")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=out)
    p.add_argument("--table", action="store_true", help="print the README table of --out and exit")
    args = p.parse_args(argv)
    if args.table:
        return print_table(script, args.out, table)
    names = pick(script, args.recipes, recipes)
    if names is None:
        return 2
    why = unavailable() if unavailable is not None else None
    if why is not None:
        print(f"{script}: {why}", file=sys.stderr)
        return 2
    from sparsekit.utils.env import versions
    from sparsekit.utils.io import write_json_atomic

    data = {"protocol": {"ppl": "wikitext2", "seqlen": 2048, "limit": args.limit}, **(extra or {}),
            "versions": versions(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": f"python bench/experiments/{script}.py " + shlex.join(argv), "rows": []}
    for name in names:
        row = run(name, args.limit, args.data_dir)
        data["rows"].append(row)
        print(f"{name:<26} {line(row)}", flush=True)
        write_json_atomic(args.out, data)
    print(table(data))
    print(f"-> {args.out}")
    return 0
