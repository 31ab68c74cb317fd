"""Zero-shot accuracy of compressed SmolLM2 on the nine tasks (seed 001's downstream comparison).

    python bench/experiments/zero_shot.py --limit 500                      # dense + three recipes, hours on 2 cores
    python bench/experiments/zero_shot.py --recipes dense,wanda-2:4 --limit 100
    python bench/experiments/zero_shot.py --table --limit 500              # the README's markdown table

Every recipe (a built-in name; `dense` = no compression) is applied in-process with the standard
calibration (c4, 128 x 512, seed 0) and scored on every task through lm-evaluation-harness
(`sparsekit.eval.harness`), the first `--limit` examples of each task (the same examples for every
recipe; 0 = the full sets). One JSON per recipe, `{out}/{model}_{recipe}_limit{N}.json`, skipped when it
exists, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from pathlib import Path

from sparsekit.api import compress, evaluate
from sparsekit.eval.tasks import TASKS, headline
from sparsekit.models.loader import load_model
from sparsekit.utils.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = "dense,wanda-2:4,sparsegpt-2:4+int4-joint,wanda-50-search"


def result_path(out: Path, model: str, recipe: str, limit: int | None) -> Path:
    stem = re.sub(r"[^A-Za-z0-9_.+-]+", "-", recipe)
    return out / f"{Path(model).name}_{stem}_{'full' if limit is None else f'limit{limit}'}.json"


def table(out: Path, limit: int | None) -> str:
    """Markdown: one row per recipe, acc (acc_norm where the task has it) per task, LAMBADA acc."""
    files = sorted(out.glob(f"*_{'full' if limit is None else f'limit{limit}'}.json"))
    rows = [json.loads(f.read_text()) for f in files]
    tasks = [t for t in TASKS if rows and all(t in r["tasks"] for r in rows)]
    head = "| recipe | " + " | ".join(tasks) + " | mean |"
    lines = [head, "|---|" + "---|" * (len(tasks) + 1)]
    for r in rows:
        vals = [headline(r["tasks"][t]) for t in tasks]
        lines.append(f"| {r['recipe_name']} | " + " | ".join(f"{100 * v:.1f}" for v in vals)
                     + f" | {100 * sum(vals) / len(vals):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--recipes", default=DEFAULT)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--limit", type=int, default=500, help="examples per task (0: the full sets) [500]")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--calib-seqlen", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "zero_shot")
    p.add_argument("--table", action="store_true")
    args = p.parse_args(argv)
    limit = args.limit or None
    if args.table:
        print(table(args.out, limit))
        return 0
    tasks = [t for t in args.tasks.split(",") if t]
    for name in [r for r in args.recipes.split(",") if r]:
        path = result_path(args.out, args.model, name, limit)
        if path.exists():
            print(f"skip {name}: {path} exists", flush=True)
            continue
        model, tokenizer = load_model(args.model, dtype="float32", device="cpu")
        start = time.perf_counter()
        if name != "dense":
            compress(model, name, tokenizer, nsamples=args.nsamples, seqlen=args.calib_seqlen, seed=0,
                     device=args.device, data_dir=args.data_dir)
        seconds = time.perf_counter() - start
        report = evaluate(model, tokenizer, ppl=[], tasks=tasks, limit=limit, data_dir=args.data_dir)
        report.update(model=args.model, recipe_name=name, compress_seconds=seconds,
                      command="python bench/experiments/zero_shot.py " + shlex.join(argv))
        write_json_atomic(path, report)
        print(f"{name}: " + "  ".join(f"{t} {headline(m):.3f}" for t, m in report["tasks"].items()),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
