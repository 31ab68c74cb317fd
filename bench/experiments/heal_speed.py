"""How long one healing step takes on this CPU, and so what the 2-hour healing budget buys here.

    python bench/experiments/heal_speed.py                      # -> bench/results/cpu/heal_speed.json (~10 min)
    python bench/experiments/heal_speed.py --threads 2 --dtypes float32 --steps 4
    python bench/experiments/heal_speed.py --threads 2 --dtypes bfloat16 --steps 8 --compile both
    python bench/experiments/heal_speed.py --table              # the README table from the JSON

Each (threads, forward dtype) pair runs `--steps` steps of the heal step of
`bench/recipes/best-2-4-healed.yaml` (4 x 512 C4 tokens a step: the dense teacher's forward, the student's
forward and backward, one AdamW step) on the dense SmolLM2-135M, in a fresh process with nothing else of
this script running; a heal step costs the same whether or not the student is pruned (its weights are
dense tensors with zeros). `--compile` times the steps eager, compiled (`heal.compile`: torch.compile of the
forwards and backward) or both. A row's pace is that of the steps after the first: the first (the heal
record's `first_step_seconds`, shown apart) holds the setup, warm-up and any compilation; rows timed before
that was kept divide the whole heal by its steps, so their few-step probes overstate. The rows of every
machine the script ran on are kept (a rerun on the same CPU with the same model and settings replaces its
row), so the file compares machines: a CPU with AMX runs bf16 autocast several times faster than fp32, one
without bf16 instructions emulates it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import pick, print_table  # noqa: E402  (after the path insert)

OUT = ROOT / "bench" / "results" / "cpu" / "heal_speed.json"
RECIPE = ROOT / "bench" / "recipes" / "best-2-4-healed.yaml"
DTYPES = ("float32", "bfloat16")
#: --compile: which of eager and compiled steps to time
COMPILE = {"no": (False,), "yes": (True,), "both": (False, True)}
#: the CPU features that decide bf16 speed (AMX tiles, AVX-512 bf16 dot products)
FEATURES = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")

#: what each timing process runs (argv: model, heal options as JSON, threads, calib dtype, data dir or '')
_CHILD = """
import json, sys, torch
import sparsekit
model, heal, threads, dtype, data_dir = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
torch.set_num_threads(threads)
c = sparsekit.compress(model, [{"heal": heal}], progress=False, data_dir=data_dir or None, calib_dtype=dtype,
                       nsamples=8)
rec = c.steps[-1]
print(json.dumps({"seconds": rec.seconds, "steps": rec.steps, "tokens": rec.tokens, "first": rec.first_step_seconds}))
"""


def heal_options(steps: int) -> tuple[dict, int]:
    """The healed recipe's heal options with `steps` steps, and that recipe's own step count."""
    from sparsekit.recipe import Heal, load_recipe

    heal = next(step for step in load_recipe(RECIPE).steps if isinstance(step, Heal))
    opts = {"seqlen": heal.seqlen, "batch_size": heal.batch_size, "lr": heal.lr, "warmup": heal.warmup}
    return {**opts, "tokens": steps * heal.seqlen * heal.batch_size}, heal.steps


def time_steps(model: str, heal: dict, threads: int, dtype: str, data_dir: str | None) -> dict:
    """Heal `model` (dense) by `heal` in a fresh interpreter at `threads` threads: the step record it printed."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-c", _CHILD, model, json.dumps(heal), str(threads), dtype, data_dir or ""],
                          env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{threads} threads, {dtype}: the timing process failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pace(seconds: float, steps: int, first: float | None) -> float:
    """Seconds per step: of the steps after the first where the first is known and there are others (it holds
    the setup and any compilation), else of the whole heal."""
    return (seconds - first) / (steps - 1) if first is not None and steps > 1 else seconds / steps


def table(data: dict) -> str:
    lines = ["| model | CPU | features | threads | forwards | compiled | first step (s) | s / step | "
             "the recipe's heal (min) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        first = "-" if r.get("first_step_seconds") is None else f"{r['first_step_seconds']:.0f}"
        lines.append(f"| {r['model']} | {r['cpu']} | {', '.join(r['features']) or '-'} | {r['threads']} | {r['dtype']} | "
                     f"{'yes' if r.get('compile') else 'no'} | {first} | {r['seconds_per_step']:.1f} | "
                     f"{r['recipe_minutes']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="heal_speed.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,2", help="comma list of thread counts [1,2]")
    p.add_argument("--dtypes", default=",".join(DTYPES), help="comma list of forward dtypes [float32,bfloat16]")
    p.add_argument("--steps", type=int, default=4, help="healing steps per timing [4]")
    p.add_argument("--compile", choices=sorted(COMPILE), default="no",
                   help="time the steps eager (no), compiled by torch.compile (yes) or both [no]")
    p.add_argument("--model", default="smollm2-135m", help="the model healed [smollm2-135m]")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--table", action="store_true", help="print the README table of --out and exit")
    args = p.parse_args(argv)
    if args.table:
        return print_table("heal_speed", args.out, table)
    dtypes = pick("heal_speed", args.dtypes, DTYPES)
    try:
        threads = [int(t) for t in args.threads.split(",") if t]
    except ValueError:
        threads = []
    if dtypes is None or not threads or min(threads) < 1 or args.steps < 1:
        if dtypes is not None:
            print(f"heal_speed: --threads takes positive integers (got {args.threads!r}) and --steps >= 1 "
                  f"(got {args.steps})", file=sys.stderr)
        return 2
    from sparsekit.utils.env import cpu_flags, cpu_model, versions
    from sparsekit.utils.io import write_json_atomic

    heal, recipe_steps = heal_options(args.steps)
    cpu, flags = cpu_model(), cpu_flags()
    features = [f for f in FEATURES if f in flags]
    old = json.loads(args.out.read_text())["rows"] if args.out.is_file() else []
    rows = []
    for t in threads:
        for dtype in dtypes:
            for compiled in COMPILE[args.compile]:
                r = time_steps(args.model, {**heal, "compile": compiled}, t, dtype, args.data_dir)
                per_step = pace(r["seconds"], r["steps"], r["first"])
                rows.append({"model": args.model, "cpu": cpu, "features": features, "threads": t, "dtype": dtype,
                             "compile": compiled, "steps": r["steps"], "seconds": r["seconds"],
                             "first_step_seconds": r["first"], "seconds_per_step": per_step,
                             "recipe_minutes": per_step * recipe_steps / 60,
                             "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
                print(f"{cpu}, {t} thread(s), {dtype}{', compiled' if compiled else ''}: {per_step:.1f} s / step "
                      f"(first step {r['first']:.1f} s)", flush=True)
    key = (lambda r: (r["model"], r["cpu"], r["threads"], r["dtype"], bool(r.get("compile"))))
    mine = {key(r) for r in rows}
    data = {"recipe": str(RECIPE.relative_to(ROOT)), "recipe_steps": recipe_steps, "heal": heal,
            "versions": versions(), "command": "python bench/experiments/heal_speed.py " + shlex.join(argv),
            "rows": [r for r in old if key(r) not in mine] + rows}
    write_json_atomic(args.out, data)
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
