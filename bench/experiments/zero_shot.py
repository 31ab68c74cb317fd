"""Zero-shot accuracy of compressed SmolLM2 on the nine tasks (seed 001's downstream comparison).

    python bench/experiments/zero_shot.py                                  # dense + three recipes, limit 100 (~2 h)
    python bench/experiments/zero_shot.py --recipes dense,wanda-2:4 --limit 20
    python bench/experiments/zero_shot.py --table                          # the README's markdown table

Every recipe (a built-in name; `dense` = no compression) is applied in-process with the standard
calibration (c4, 128 x 512, seed 0) and scored on every task through lm-evaluation-harness
(`sparsekit.eval.harness`), the first `--limit` examples of each task (the same examples for every
recipe; 0 = the full sets). One JSON per recipe, `{out}/{model}_{recipe}_limit{N}.json`, skipped when it
exists, so an interrupted run resumes.

`--checkpoints DIR` scores a recipe from the checkpoint `DIR/{model}_{recipe}` written by
`prune_table.py --save-dir DIR` when there is one, instead of calibrating again: the checkpoint must
record the same recipe and calibration protocol (`--calib-dtype`: the forwards' dtype included), or the
script refuses it. `--saved NAME=DIR` scores any checkpoint as it is, under its own recipe and
calibration (e.g. the shrunk models `structured.py --save-dir` keeps).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
import time
from pathlib import Path
from types import ModuleType

from sparsekit.api import compress, evaluate, load
from sparsekit.checkpoint import read_metadata
from sparsekit.eval.tasks import TASKS, headline
from sparsekit.models.loader import load_model
from sparsekit.recipe import load_recipe
from sparsekit.utils.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[2]
#: dense, the two headline 2:4 recipes and the best allocation-search recipe of the pruning table
DEFAULT = "dense,wanda-2:4,sparsegpt-2:4+int4-joint,sparsegpt-50-search"


def _prune_table() -> ModuleType:
    """`prune_table.py`, loaded by file path: a plain `import prune_table` works only when this file runs
    as a script (its folder on sys.path), not when tests load it by path."""
    spec = importlib.util.spec_from_file_location("prune_table", Path(__file__).with_name("prune_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_PRUNE_TABLE = _prune_table()
#: the folder name `prune_table.py --save-dir` gives a recipe's checkpoint: that script's own function, not
#: a copy that can drift from it (a copy once looked for a YAML recipe's checkpoint under another name)
checkpoint_stem = _PRUNE_TABLE.checkpoint_stem


def result_path(out: Path, model: str, recipe: str, limit: int | None) -> Path:
    """`{out}/{model}_{recipe}_limit{N}.json`; '+' stays in the recipe part, as in the committed results."""
    stem = _PRUNE_TABLE.recipe_stem(recipe, keep="+")
    return out / f"{Path(model).name}_{stem}_{'full' if limit is None else f'limit{limit}'}.json"


def from_checkpoint(folder: Path, recipe: str, calibration: dict, forward_dtype: str = "float32"):
    """`(model, tokenizer, metadata)` of a saved compression of `recipe`, or None when `folder` holds none;
    the checkpoint must record the same calibration windows and forward dtype."""
    meta = read_metadata(folder) if folder.is_dir() else None
    if meta is None:
        return None
    want = load_recipe(recipe).to_list()
    used = meta.get("calibration")  # None: the recipe needs no calibration data (e.g. magnitude)
    # the same windows, and the forwards this script's own compression would run (the batch size only
    # reorders sums); checkpoints written before those settings were recorded have neither key (fp32)
    same = used is None or ({k: used.get(k) for k in calibration} == calibration
                            and used.get("forward_dtype", "float32") == forward_dtype)
    if meta.get("recipe") != want or not same:
        raise SystemExit(f"{folder}: its recipe {meta.get('recipe')} / calibration {meta.get('calibration')} differ "
                         f"from {want} / {calibration}; remove it or drop --checkpoints")
    model, tokenizer = load(folder, dtype="float32")
    return model, tokenizer, meta


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
    p.add_argument("--limit", type=int, default=100, help="examples per task (0: the full sets) [100]")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--calib-seqlen", type=int, default=512)
    p.add_argument("--calib-dtype", default="float32", choices=["float32", "bfloat16"],
                   help="calibration forwards (a checkpoint must have been compressed with the same) [float32]")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "zero_shot")
    p.add_argument("--checkpoints", type=Path, default=None,
                   help="reuse checkpoints DIR/{model}_{recipe} from prune_table.py --save-dir DIR")
    p.add_argument("--saved", default="",
                   help="also score saved checkpoints as they are: NAME=DIR[,NAME=DIR...] (their own recipe and "
                        "calibration, e.g. structured.py --save-dir's shrunk models)")
    p.add_argument("--table", action="store_true")
    args = p.parse_args(argv)
    limit = args.limit or None
    if args.table:
        print(table(args.out, limit))
        return 0
    tasks = [t for t in args.tasks.split(",") if t]
    named: dict[str, tuple[Path, dict]] = {}  # --saved: name -> (folder, its metadata)
    for item in (x for x in args.saved.split(",") if x):
        name, sep, folder = item.partition("=")
        meta = read_metadata(Path(folder)) if sep and name else None
        if meta is None:
            print(f"zero_shot: --saved wants NAME=DIR with DIR a sparsekit checkpoint, got {item!r}", file=sys.stderr)
            return 2
        named[name] = Path(folder), meta
    for name in [r for r in args.recipes.split(",") if r] + list(named):
        path = result_path(args.out, args.model, name, limit)
        if path.exists():
            print(f"skip {name}: {path} exists", flush=True)
            continue
        calibration = {"source": "c4", "nsamples": args.nsamples, "seqlen": args.calib_seqlen, "seed": 0}
        saved, folder = None, None
        if name in named:
            folder, meta = named[name]
            saved = (*load(folder, dtype="float32"), meta)
            calibration = meta.get("calibration") or {}
        elif args.checkpoints is not None and name != "dense":
            folder = args.checkpoints / checkpoint_stem(args.model, name)
            saved = from_checkpoint(folder, name, calibration, args.calib_dtype)
        start = time.perf_counter()
        if saved is not None:
            model, tokenizer, meta = saved
            origin = {"checkpoint": str(folder), "checkpoint_recipe": meta.get("recipe"),
                      "checkpoint_command": meta.get("command"), "checkpoint_date": meta.get("date")}
        else:
            model, tokenizer = load_model(args.model, dtype="float32", device="cpu")
            origin = {}
            if name != "dense":
                compress(model, name, tokenizer, nsamples=args.nsamples, seqlen=args.calib_seqlen, seed=0,
                         device=args.device, data_dir=args.data_dir, calib_dtype=args.calib_dtype)
        seconds = time.perf_counter() - start
        report = evaluate(model, tokenizer, ppl=[], tasks=tasks, limit=limit, data_dir=args.data_dir)
        report.update(model=args.model, recipe_name=name, compress_seconds=None if saved else seconds,
                      calibration=None if name == "dense" else {"forward_dtype": args.calib_dtype, **calibration},
                      **origin,
                      command="python bench/experiments/zero_shot.py " + shlex.join(argv))
        write_json_atomic(path, report)
        print(f"{name}: " + "  ".join(f"{t} {headline(m):.3f}" for t, m in report["tasks"].items()),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
