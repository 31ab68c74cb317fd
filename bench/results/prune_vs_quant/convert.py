"""One-time conversion of this folder's pre-sweep results into `sparsekit sweep`'s points.jsonl.

The pruning x quantization grid first ran through `bench/experiments/prune_vs_quant.py`, which wrote one
JSON line per point (`sparsity`, `format`, `recipe`, `ppl`, `tokens`, `bytes`, `compress_seconds`,
`protocol`, `model`, `device`, `versions`, `date`, `command`) to `smollm2-135m_limit4.jsonl`. That grid
is now `bench/sweeps/prune_vs_quant.yaml`, run by `sparsekit sweep` (which computes the same numbers:
`pack: false` and `dense_bits: 16` are the script's simulated compression and 16-bit sizing). This
maps each old line onto the sweep point of the same labels without re-measuring anything:

- the recipe must equal the grid point's (the grid's rules give every point the script's method);
- the old protocol (seqlen, limit, calibration) and model must equal the grid's;
- perplexity, tokens and bytes are copied: JSON floats round-trip exactly, so bit for bit;
- `id` is the sweep's id of the recipe and `protocol` the grid's, so that `sparsekit sweep` resumes
  from the file (nothing left to run) and refuses to mix another protocol into it;
- `packed` is `[]` (the script ran without packed modules) and `sparsity` is `null` (not measured);
  `converted_from` keeps the old line's point and command.

It ran once, on the file as committed before the conversion:

    git show 60b2087:bench/results/prune_vs_quant/smollm2-135m_limit4.jsonl > /tmp/old.jsonl
    python bench/results/prune_vs_quant/convert.py /tmp/old.jsonl --out bench/results/prune_vs_quant
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sparsekit import sweep
from sparsekit.errors import SparsekitError
from sparsekit.recipe import Recipe

REPO = Path(__file__).resolve().parents[3]
GRID = REPO / "bench" / "sweeps" / "prune_vs_quant.yaml"


def convert(old_rows: list[dict], grid: dict) -> list[dict]:
    """The sweep lines of the script's lines `old_rows` (in their order), checked against `grid`."""
    stated = sweep.protocol(grid)
    by_labels = {(labels["prune"], labels["quantize"]): recipe for labels, recipe in sweep.labelled_points(grid)}
    out: list[dict] = []
    seen: set[str] = set()
    for old in old_rows:
        key = (old["sparsity"], old["format"])
        where = f"point sparsity {old['sparsity']} x {old['format']}"
        if key not in by_labels:
            raise SparsekitError(f"{where} is not in the grid (labels prune x quantize: "
                                 f"{', '.join('/'.join(k) for k in by_labels)})")
        recipe = by_labels[key]
        if old["recipe"] != recipe:
            raise SparsekitError(f"{where}: the script ran {old['recipe']}, the grid's point is {recipe}; "
                                 "a converted line must be the grid's recipe")
        theirs = {"model": old["model"], "seqlen": old["protocol"]["seqlen"], "limit": old["protocol"]["limit"],
                  "calibration": old["protocol"]["calibration"]}
        ours = {k: stated[k] for k in theirs}
        if theirs != ours:
            raise SparsekitError(f"{where} was measured under another protocol ({theirs}; the grid: {ours})")
        pid = sweep.point_id(recipe)
        if pid in seen:
            raise SparsekitError(f"{where} appears twice")
        seen.add(pid)
        out.append({"id": pid, "recipe": recipe, "name": Recipe.from_list(recipe).describe() if recipe else "dense",
                    "ppl": {"wikitext2": old["ppl"]}, "tokens": {"wikitext2": old["tokens"]}, "bytes": old["bytes"],
                    "sparsity": None, "packed": [], "compress_seconds": old["compress_seconds"],
                    "device": old["device"], "versions": old["versions"], "date": old["date"], "protocol": stated,
                    "converted_from": {"sparsity": old["sparsity"], "format": old["format"],
                                       "command": old["command"]}})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", type=Path, help="the script's JSON lines (smollm2-135m_limit4.jsonl before the conversion)")
    p.add_argument("--grid", type=Path, default=GRID)
    p.add_argument("--out", type=Path, required=True, help="the sweep folder (points.jsonl, grid.json, plots)")
    args = p.parse_args(argv)
    grid = sweep.load_grid(args.grid)
    rows = convert([json.loads(line) for line in args.old.read_text().splitlines() if line.strip()], grid)
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.out / "points.jsonl").exists():
        raise SystemExit(f"{args.out / 'points.jsonl'} exists: the conversion runs once, into a folder without points")
    (args.out / "grid.json").write_text(json.dumps(grid, indent=2) + "\n")  # as `sparsekit sweep` writes it
    (args.out / "points.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(sweep.render(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
