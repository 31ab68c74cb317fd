"""Prune a model with several recipes and score each one: the README's pruning table.

    python bench/experiments/prune_table.py --recipes magnitude-50,wanda-50,sparsegpt-50 --limit 40
    python bench/experiments/prune_table.py --table            # print the markdown table of what is there
    python bench/experiments/prune_table.py --recipes int4-rtn,int4-gptq --out bench/results/quant
    python bench/experiments/prune_table.py --table --bytes --out bench/results/quant

Each recipe is compressed in-process (calibration: docs/ARCHITECTURE.md §9, c4 128 x 512, seed 0), evaluated on
WikiText-2 (seqlen 2048, the first `--limit` windows) and written to
`{out}/{model}_{recipe}_limit{N}.json`: the `sparsekit eval` report plus the recipe, the pruning time,
the achieved sparsity per projection type and the allocation record. Existing results are skipped
(`--force` re-runs them), so an interrupted sweep resumes where it stopped. `--save-dir DIR` also keeps
each compressed model as a sparsekit checkpoint `DIR/{model}_{recipe}` (e.g. for `zero_shot.py
--checkpoints DIR`, which then scores the same weights without calibrating again).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from pathlib import Path

from sparsekit.api import compress, evaluate, save
from sparsekit.models.loader import load_model
from sparsekit.recipe import load_recipe
from sparsekit.steps.records import PrunedModule, PruneRecord
from sparsekit.utils.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[2]


def recipe_stem(recipe: str, keep: str = "") -> str:
    """A recipe as a file-name part: a YAML file by its stem, every run of other characters than
    letters, digits, `_.-` and `keep` as one '-'.

    `keep` exists because the committed result files differ: `zero_shot.py` names its results with '+'
    kept (`sparsegpt-2-4+int4-joint`) while this script's result and checkpoint names replace it
    (`sparsegpt-2-4-int4-joint`); renaming either would orphan files under bench/results/.
    """
    name = Path(recipe).stem if recipe.endswith((".yaml", ".yml")) else recipe
    return re.sub(rf"[^A-Za-z0-9_.{re.escape(keep)}-]+", "-", name)


def checkpoint_stem(model: str, recipe: str) -> str:
    """`{model}_{recipe}`: the folder `--save-dir` gives a recipe's checkpoint, and this script's result
    stem. The one definition: `zero_shot.py --checkpoints` loads it from here to find those folders."""
    return f"{Path(model).name}_{recipe_stem(recipe)}"


def result_path(out: Path, model: str, recipe: str, limit: int | None) -> Path:
    return out / f"{checkpoint_stem(model, recipe)}_{'full' if limit is None else f'limit{limit}'}.json"


def per_type(modules: dict[str, PrunedModule]) -> dict[str, float]:
    """Achieved sparsity per projection role, weighted by module size."""
    acc: dict[str, list[float]] = {}
    for mod in modules.values():
        numel = mod.shape[0] * mod.shape[1]
        a = acc.setdefault(mod.role, [0.0, 0.0])
        a[0] += mod.sparsity * numel
        a[1] += numel
    return {role: removed / total for role, (removed, total) in acc.items()}


def run_one(args: argparse.Namespace, recipe_name: str, path: Path) -> dict:
    recipe = load_recipe(recipe_name)
    model, tokenizer = load_model(args.model, dtype="float32", device="cpu")
    start = time.perf_counter()
    compressed = compress(model, recipe, tokenizer, calib=args.calib, nsamples=args.nsamples,
                          seqlen=args.calib_seqlen, seed=args.seed, device=args.device, data_dir=args.data_dir)
    seconds = time.perf_counter() - start
    report = evaluate(model, tokenizer, ppl=args.ppl, seqlen=args.seqlen, limit=args.limit, data_dir=args.data_dir,
                      storage=compressed.storage)
    prune = next((st for st in compressed.steps if isinstance(st, PruneRecord)), None)
    report.update(model=args.model, recipe=recipe.to_list(), recipe_name=recipe_name,
                  prune_seconds=seconds, calibration=compressed.calibration,
                  mask_sparsity=compressed.sparsity,
                  sparsity_per_type=per_type(prune.modules) if prune else {},
                  allocation={k: v for k, v in (prune.allocation if prune else {}).items() if k != "module_error"},
                  command="python bench/experiments/prune_table.py " + shlex.join(args.argv))
    if args.save_dir is not None:
        save(compressed, args.save_dir / checkpoint_stem(args.model, recipe_name), command=report["command"])
    write_json_atomic(path, report)
    return report


def table(out: Path, with_bytes: bool = False) -> str:
    """The markdown table of the results in `out`; `with_bytes` adds the true packed size (MiB)."""
    head = "| recipe | sparsity | WikiText-2 ppl | " + ("true size (MiB) | " if with_bytes else "")
    rows = [head + "compression time (s) | result file |" if with_bytes else head + "pruning time (s) | result file |",
            "|---|---|---|" + ("---|" if with_bytes else "") + "---|---|"]
    for file in sorted(out.glob("*.json")):
        r = json.loads(file.read_text())
        if "recipe_name" not in r:
            continue
        size = f"{r['bytes'] / 2 ** 20:.1f} | " if with_bytes else ""
        threads = re.search(r"(\d+) threads?", r.get("device") or "")  # timings depend on the CPU threads used
        when = f"{r['prune_seconds']:.0f}" + (f" ({threads.group(1)} thr)" if threads else "")
        rows.append(f"| {r['recipe_name']} | {r['mask_sparsity']:.3f} | {r['ppl']['wikitext2']:.3f} | {size}"
                    f"{when} | `{file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}` |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--recipes", default="magnitude-50,wanda-50,sparsegpt-50,magnitude-2:4,wanda-2:4,sparsegpt-2:4,"
                                        "magnitude-4:8,wanda-4:8,sparsegpt-4:8")
    p.add_argument("--limit", type=int, default=40, help="WikiText-2 windows (0: the whole test set) [40]")
    p.add_argument("--ppl", default="wikitext2")
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--calib", default="c4")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--calib-seqlen", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "prune")
    p.add_argument("--save-dir", type=Path, default=None,
                   help="also save each compressed model as a checkpoint DIR/{model}_{recipe}")
    p.add_argument("--force", action="store_true", help="re-run recipes that already have a result")
    p.add_argument("--table", action="store_true", help="only print the markdown table of existing results")
    p.add_argument("--bytes", action="store_true", help="with --table: add the true packed size (quantized recipes)")
    args = p.parse_args(argv)
    args.argv = argv
    args.ppl = [s for s in args.ppl.split(",") if s]
    args.limit = args.limit or None
    if args.table:
        print(table(args.out, args.bytes))
        return 0
    for name in [r for r in args.recipes.split(",") if r]:
        path = result_path(args.out, args.model, name, args.limit)
        if path.exists() and not args.force:
            print(f"skip {name}: {path} exists", flush=True)
            continue
        r = run_one(args, name, path)
        print(f"{name}: sparsity {r['mask_sparsity']:.4f}  ppl {r['ppl']}  pruning {r['prune_seconds']:.0f} s  -> {path}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
