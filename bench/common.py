"""What the scripts of bench/kernels and bench/experiments share: the `--table` mode that prints a README
table from the committed JSON, and the `--variants` list check. (Scripts put the repository root on
sys.path, so `bench` imports as a namespace package from a plain checkout.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Iterable


def print_table(script: str, out: Path, table: Callable[[dict], str]) -> int:
    """Print `table(json of out)`; exit status 2 with one line when `out` was never measured."""
    if not out.is_file():
        print(f"{script}: {out} does not exist; run the measurement first", file=sys.stderr)
        return 2
    print(table(json.loads(out.read_text())))
    return 0


def pick(script: str, text: str, known: Iterable[str]) -> list[str] | None:
    """The comma-separated names of `text`, or None (after one line on stderr) if any is not in `known`."""
    known = list(known)
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in known]
    if unknown:
        print(f"{script}: unknown variant(s) {unknown}; known: {', '.join(known)}", file=sys.stderr)
        return None
    return names
