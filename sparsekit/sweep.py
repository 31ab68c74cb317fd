"""`sparsekit sweep --grid GRID.yaml --out DIR`: a grid of recipes, each compressed, scored and (optionally)
timed, with the Pareto frontier of perplexity vs true bytes and one self-contained HTML report.

```yaml
model: smollm2-135m
ppl: [wikitext2]            # perplexity data sets
seqlen: 2048
limit: 8                    # windows per data set (null: all)
calibration: {source: c4, nsamples: 32, seqlen: 512, seed: 0}
tasks: [arc_easy, piqa]     # optional: zero-shot tasks (sparsekit.eval.tasks), through lm-eval
task_limit: 200             # first N examples of each task (null: all)
bench: {prefill: 256, decode: 32, repeats: 3}    # optional: speed / memory / energy of every point
grid:                       # axes in recipe order; `null` = the step is absent
  drop_blocks: [null, {n: 2, method: bi}]
  prune: [null, {method: wanda, sparsity: 0.5}, {method: sparsegpt, pattern: "2:4"}]
  quantize: [null, {format: int4, method: gptq}]
```

Every combination of the axes is one point (a recipe; the all-null point is the dense baseline).
A point's id is the sha256 of its recipe, and `DIR/points.jsonl` gets one whole line per finished
point, so a sweep that crashed or was stopped resumes where it stopped: finished points are never
recomputed or duplicated. After the last point, `DIR/pareto.png` (perplexity vs bytes, frontier
marked), `DIR/tasks.png` (accuracy per task per recipe, when tasks are set), `DIR/speed.png` (decode
speedup vs perplexity increase, when benchmarked) and `DIR/report.html` (plots embedded, the table)
are written.
"""

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import json
import os
from pathlib import Path
from typing import Any

from sparsekit.errors import SparsekitError
from sparsekit.eval.tasks import headline
from sparsekit.recipe import STEPS, Recipe

GRID_KEYS = ("model", "ppl", "seqlen", "limit", "calibration", "tasks", "task_limit", "bench", "grid", "dtype",
             "device")


def load_grid(path: str | os.PathLike) -> dict:
    """Read and validate a grid file; every point's recipe is checked before anything runs."""
    import yaml

    file = Path(path).expanduser()
    if not file.is_file():
        raise SparsekitError(f"grid file {file} does not exist")
    try:
        grid = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise SparsekitError(f"grid file {file} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(grid, dict) or not isinstance(grid.get("grid"), dict) or not grid["grid"]:
        raise SparsekitError(f"grid file {file} needs a mapping with a non-empty 'grid' of axes, e.g. "
                             "grid: {prune: [null, {method: wanda, sparsity: 0.5}]}")
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise SparsekitError(f"grid file {file}: unknown keys {unknown}; known: {', '.join(GRID_KEYS)}")
    for axis, values in grid["grid"].items():
        if axis not in STEPS:
            raise SparsekitError(f"grid axis {axis!r} is not a recipe step; steps: {', '.join(STEPS)}")
        if not isinstance(values, list) or not values:
            raise SparsekitError(f"grid axis {axis!r} must be a non-empty list of step options (null: absent)")
    grid.setdefault("model", "smollm2-135m")
    grid.setdefault("ppl", ["wikitext2"])
    grid.setdefault("seqlen", 2048)
    grid.setdefault("limit", None)
    grid.setdefault("calibration", {})
    grid.setdefault("tasks", [])
    grid.setdefault("task_limit", None)
    from sparsekit.eval.tasks import TASKS

    if not isinstance(grid["tasks"], list) or any(t not in TASKS for t in grid["tasks"]):
        raise SparsekitError(f"grid file {file}: tasks must be a list of {', '.join(TASKS)}; got {grid['tasks']!r}")
    limit = grid["task_limit"]
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise SparsekitError(f"grid file {file}: task_limit must be a positive integer or null, got {limit!r}")
    for recipe in points(grid):
        if recipe:
            Recipe.from_list(recipe)  # a bad point fails now, not hours into the sweep
    return grid


def points(grid: dict) -> list[list[dict]]:
    """The recipes of the grid: the cartesian product of its axes (in the order the file lists them)."""
    axes = list(grid["grid"].items())
    out = []
    for combo in itertools.product(*[values for _, values in axes]):
        out.append([{axis: options} for (axis, _), options in zip(axes, combo) if options is not None])
    return out


def point_id(recipe: list[dict]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def finished(out_dir: Path) -> dict[str, dict]:
    """Points already in `points.jsonl` (a torn last line from a crash is ignored and recomputed)."""
    file = out_dir / "points.jsonl"
    done = {}
    if file.exists():
        for line in file.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[row["id"]] = row
    return done


def run_point(grid: dict, recipe: list[dict], progress: bool = True) -> dict:
    """Compress (convert), score and optionally benchmark one point."""
    from sparsekit.api import benchmark, convert, evaluate
    from sparsekit.models.loader import load_model

    calib = grid["calibration"] or {}
    model, tokenizer = load_model(grid["model"], dtype=grid.get("dtype", "auto"), device="cpu")
    storage: dict = {}
    packed: dict = {}
    if recipe:
        result = convert(model, recipe, tokenizer, calib=calib.get("source", "c4"),
                         nsamples=calib.get("nsamples", 128), seqlen=calib.get("seqlen", 512),
                         seed=calib.get("seed", 0), device=grid.get("device", "auto"), progress=progress)
        storage, packed = result.storage, result.packed
    report = evaluate(model, tokenizer, ppl=grid["ppl"], seqlen=grid["seqlen"], limit=grid["limit"],
                      progress=progress, storage=storage or None)
    row = {"id": point_id(recipe), "recipe": recipe, "name": Recipe.from_list(recipe).describe() if recipe else "dense",
           "ppl": report["ppl"], "tokens": report["tokens"], "bytes": report["bytes"], "sparsity": report["sparsity"],
           "packed": sorted(set(packed.values())), "device": report["device"], "versions": report["versions"],
           "date": report["date"]}
    if grid["tasks"]:
        from sparsekit.eval.harness import run_tasks

        row["tasks"] = run_tasks(model, tokenizer, grid["tasks"], limit=grid["task_limit"], progress=progress)
        row["task_limit"] = grid["task_limit"]
    if grid.get("bench"):
        b = benchmark(model, **grid["bench"])
        row.update(latency_ms=b["latency_ms"], tokens_per_s=b["tokens_per_s"], peak_mem_bytes=b["peak_mem_bytes"],
                   joules_per_token=b["joules_per_token"], bench_device=b["device"])
    return row


def run_sweep(grid_path: str | os.PathLike, out_dir: str | os.PathLike, progress: bool = True) -> Path:
    """Run (or resume) a sweep; return the report path."""
    grid = load_grid(grid_path)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.json").write_text(json.dumps(grid, indent=2) + "\n")
    done = finished(out)
    todo = [r for r in points(grid) if point_id(r) not in done]
    from tqdm.auto import tqdm

    for recipe in tqdm(todo, desc="sweep", unit="point", disable=not progress):
        row = run_point(grid, recipe, progress)
        with (out / "points.jsonl").open("a") as fh:  # one whole line per finished point
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    return render(out)


def pareto_front(rows: list[dict], metric: str) -> list[dict]:
    """Rows no other row beats on both bytes and `metric` (both lower-better)."""
    front, best = [], float("inf")
    for r in sorted(rows, key=lambda r: (r["bytes"], r["ppl"][metric])):
        if r["ppl"][metric] < best:
            front.append(r)
            best = r["ppl"][metric]
    return front


def _task_plot(out: Path, rows: list[dict], tasks: list[str]) -> str:
    """Grouped bars: the headline accuracy of every task, one bar per recipe (seed 001's comparison)."""
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: -r["bytes"])
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.2 * len(tasks) + 2), 4.5))
    for i, r in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(tasks))]
        ax.bar(xs, [100 * headline(r["tasks"][t]) for t in tasks], width, label=r["name"])
    ax.set_xticks(range(len(tasks)), tasks, fontsize=8)
    ax.set_ylabel("accuracy (%; acc_norm where the task has it)")
    limit = rows[0].get("task_limit")
    ax.set_title("zero-shot accuracy per task" + (f" (first {limit} examples)" if limit else ""), fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "tasks.png", dpi=110)
    plt.close(fig)
    return "tasks.png"


def _protocol(out: Path, tasks: list[str]) -> str:
    """One line of HTML that states how the points were measured (from the grid the sweep ran)."""
    grid_file = out / "grid.json"
    if not grid_file.exists():
        return ""
    grid = json.loads(grid_file.read_text())
    calib = grid.get("calibration") or {}
    parts = [f"model {grid.get('model')}", f"perplexity on {', '.join(grid.get('ppl', []))} "
             f"(seqlen {grid.get('seqlen')}, {'all' if grid.get('limit') is None else grid['limit']} windows)",
             f"calibration {calib.get('source', 'c4')} x {calib.get('nsamples', 128)} windows of "
             f"{calib.get('seqlen', 512)} tokens"]
    if tasks:
        parts.append(f"tasks {', '.join(tasks)} ({'all' if grid.get('task_limit') is None else grid['task_limit']}"
                     " examples each)")
    return f"<p>{html.escape('; '.join(parts))}</p>"


def render(out: Path) -> Path:
    """Plots and the self-contained HTML report of the finished points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(finished(out).values())
    if not rows:
        raise SparsekitError(f"{out} has no finished points to report")
    metric = sorted(rows[0]["ppl"])[0]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.scatter([r["bytes"] / 2 ** 20 for r in rows], [r["ppl"][metric] for r in rows], s=28, zorder=3)
    front = pareto_front(rows, metric)
    ax.plot([r["bytes"] / 2 ** 20 for r in front], [r["ppl"][metric] for r in front], "-", color="crimson",
            label="Pareto frontier", zorder=2)
    for r in front:
        ax.annotate(r["name"], (r["bytes"] / 2 ** 20, r["ppl"][metric]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("true weight bytes (MiB)")
    ax.set_ylabel(f"{metric} perplexity")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=110)
    plt.close(fig)
    images = ["pareto.png"]
    tasks = [t for t in rows[0].get("tasks", {}) if all(t in r.get("tasks", {}) for r in rows)]
    if tasks:
        images.append(_task_plot(out, rows, tasks))
    dense = next((r for r in rows if not r["recipe"]), None)
    if dense is not None and dense.get("tokens_per_s"):
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        for r in rows:
            if r.get("tokens_per_s"):
                x = r["ppl"][metric] / dense["ppl"][metric] - 1
                y = r["tokens_per_s"] / dense["tokens_per_s"]
                ax.scatter(x, y, s=28)
                ax.annotate(r["name"], (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.axhline(1.0, color="gray", lw=0.8, ls=":")
        ax.set_xlabel(f"relative {metric} perplexity increase vs dense")
        ax.set_ylabel("decode speedup vs dense")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "speed.png", dpi=110)
        plt.close(fig)
        images.append("speed.png")
    cols = ["name", "bytes", *[f"ppl {k}" for k in sorted(rows[0]["ppl"])], *[f"task {t}" for t in tasks],
            "sparsity", "tokens_per_s", "latency_ms", "joules_per_token", "packed"]

    def cell(r: dict, c: str) -> str:
        v: Any = r["ppl"].get(c[4:]) if c.startswith("ppl ") else r.get(c)
        if c.startswith("task "):
            v = headline(r["tasks"][c[5:]])
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, int) and c == "bytes":
            return f"{v:,}"
        return html.escape(", ".join(v) if isinstance(v, list) else str("" if v is None else v))

    table = "".join("<tr>" + "".join(f"<td>{cell(r, c)}</td>" for c in cols) + "</tr>"
                    for r in sorted(rows, key=lambda r: r["bytes"]))
    figs = "".join(f'<img alt="{name}" src="data:image/png;base64,'
                   f'{base64.b64encode((out / name).read_bytes()).decode()}"/>' for name in images)
    page = ("<!doctype html><meta charset='utf-8'><title>sparsekit sweep</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:3px 8px;border-bottom:1px solid #ddd}"
            "img{max-width:48%;margin:4px}</style>"
            f"<h1>sparsekit sweep: {len(rows)} points</h1>{_protocol(out, tasks)}{figs}<table><tr>"
            + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + f"</tr>{table}</table>")
    (out / "report.html").write_text(page)
    return out / "report.html"
