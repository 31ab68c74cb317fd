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
dtype: auto                 # of the loaded model (auto: fp32 on a CPU)
dense_bits: 16              # optional: values not packed count at 16 bits (evaluated in fp32, sized as bf16)
pack: true                  # false: simulate (compress without packed modules; bytes from each format's bits)
grid:                       # axes in recipe order; `null` = the step is absent
  drop_blocks: [null, {n: 2, method: bi}]
  prune:                    # a list of options, or quoted labels mapped to options
    dense: null
    "50%": {method: sparsegpt, sparsity: 0.5}
    "2:4": {method: sparsegpt, pattern: "2:4"}
  quantize: [null, {format: int4, method: gptq}]
rules:                      # optional, in order: options that depend on the other axes
  - when: {prune: ["50%", "2:4"]}
    set: {quantize: {joint: true}}    # GPTQ inside SparseGPT's sweep where there is a mask
```

Every combination of the axes is one point (a recipe; the all-null point is the dense baseline).
An axis is a list of options (each labelled `key=value ...`, `none` for null) or a mapping of
quoted labels to options. A rule's `when` names labels per axis (one or a list); for every point
matching all of them, `set` is merged into the point's steps as a JSON merge patch (RFC 7396: a
mapping merges, `null` removes an option, or the whole step). Rules refine the steps a point has,
never add one. So a grid can give each point its own method without listing points one by one.

A point's id is the sha256 of its recipe, and `DIR/points.jsonl` gets one whole line per finished
point, so a sweep that crashed or was stopped resumes where it stopped: finished points are never
recomputed or duplicated. Several processes may run the same command on one DIR (e.g. one per
core): each claims the next point nobody holds (`DIR/claims/ID.pid`; the claim of a dead process is
taken over), so they split the grid without a plan. On a cluster, `--executor ray` runs one Ray task
per point instead (`_run_ray`: each reserves `--cpus-per-point` / `--gpus-per-point`, one GPU by
default when the grid's device is CUDA) and this process alone appends their rows; the points, files
and report are the same as the local executor's. A DIR holds the points of one protocol
(`PROTOCOL_KEYS`, stated in every line): a grid whose protocol differs is refused, so that every
point in a report is comparable.

After the last point, `DIR/pareto.png` (perplexity vs bytes, frontier marked; with two axes, one
colour per label of the first and one marker per label of the second), `DIR/tasks.png` (accuracy per
task per recipe, when tasks are set), `DIR/speed.png` (decode speedup vs perplexity increase, when
benchmarked) and `DIR/report.html` (plots embedded, the table) are written. `sparsekit sweep --out
DIR --table` prints the finished points as a markdown grid (`markdown_table`).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

from sparsekit.errors import SparsekitError
from sparsekit.eval.tasks import headline
from sparsekit.recipe import STEPS, Recipe

GRID_KEYS = ("model", "ppl", "seqlen", "limit", "calibration", "tasks", "task_limit", "bench", "grid", "rules",
             "dtype", "dense_bits", "pack", "device")
#: what a point's numbers depend on besides its recipe: one output folder holds one protocol
#: (`device`, where calibration runs, is left out: it changes speed, not what is measured)
PROTOCOL_KEYS = ("model", "ppl", "seqlen", "limit", "calibration", "tasks", "task_limit", "bench", "dtype",
                 "dense_bits", "pack")
CALIBRATION_DEFAULTS = {"source": "c4", "nsamples": 128, "seqlen": 512, "seed": 0}  # docs/ARCHITECTURE.md §9
DEFAULTS: dict[str, Any] = {"model": "smollm2-135m", "ppl": ["wikitext2"], "seqlen": 2048, "limit": None,
                            "calibration": {}, "tasks": [], "task_limit": None, "bench": None, "rules": [],
                            "dtype": "auto", "dense_bits": None, "pack": True, "device": "auto"}


def _with_defaults(grid: dict) -> dict:
    """`grid` with every optional key filled in (and the calibration's defaults), so that two grids
    that mean the same protocol compare equal; a grid.json written before a key existed reads the same."""
    out = {**copy.deepcopy(DEFAULTS), **grid}
    out["calibration"] = {**CALIBRATION_DEFAULTS, **(out["calibration"] or {})}
    return out


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
        if not isinstance(values, (list, dict)) or not values:
            raise SparsekitError(f"grid axis {axis!r} must be a non-empty list of step options (null: absent), "
                                 "or a mapping of labels to step options")
        if isinstance(values, dict):
            for label in values:
                if not isinstance(label, str):
                    # YAML reads 2:4 as the base-60 number 124 and 0.5 as a float: a label must be written as text
                    raise SparsekitError(f"grid axis {axis!r}: label {label!r} is not a string; quote the labels "
                                         "of a mapping axis (e.g. \"2:4\": {...})")
    calib = grid.get("calibration") or {}
    if not isinstance(calib, dict) or set(calib) - set(CALIBRATION_DEFAULTS):
        raise SparsekitError(f"grid file {file}: calibration must be a mapping of "
                             f"{', '.join(CALIBRATION_DEFAULTS)}; got {calib!r}")
    grid = _with_defaults(grid)
    from sparsekit.eval.tasks import TASKS

    if not isinstance(grid["tasks"], list) or any(t not in TASKS for t in grid["tasks"]):
        raise SparsekitError(f"grid file {file}: tasks must be a list of {', '.join(TASKS)}; got {grid['tasks']!r}")
    limit = grid["task_limit"]
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise SparsekitError(f"grid file {file}: task_limit must be a positive integer or null, got {limit!r}")
    bits = grid["dense_bits"]
    if bits is not None and bits not in (8, 16, 32):
        raise SparsekitError(f"grid file {file}: dense_bits must be 8, 16, 32 or null (each tensor's own width), "
                             f"got {bits!r}")
    if not isinstance(grid["pack"], bool):
        raise SparsekitError(f"grid file {file}: pack must be true (packed modules, as deployed) or false (simulated: "
                             f"sizes from each format's packed bits), got {grid['pack']!r}")
    _check_rules(file, grid)
    seen: dict[str, dict] = {}
    for labels, recipe in labelled_points(grid):
        if recipe:
            try:
                Recipe.from_list(recipe)  # a bad point fails now, not hours into the sweep
            except SparsekitError as exc:
                raise SparsekitError(f"grid file {file}: point {_label_text(labels)}: {exc}") from None
        pid = point_id(recipe)
        if pid in seen:
            raise SparsekitError(f"grid file {file}: points {_label_text(seen[pid])} and {_label_text(labels)} "
                                 "have the same recipe (after the rules); a grid lists each recipe once")
        seen[pid] = labels
    return grid


def _label_text(labels: dict[str, str]) -> str:
    return " / ".join(f"{axis} {label}" for axis, label in labels.items())


def axes(grid: dict) -> list[tuple[str, list[tuple[str, dict | None]]]]:
    """The grid's axes in file order, each as (step, [(label, options or None), ...])."""
    out = []
    for axis, values in grid["grid"].items():
        if isinstance(values, dict):
            out.append((axis, list(values.items())))
        else:
            out.append((axis, [(_option_label(v), v) for v in values]))
    return out


def _option_label(options: dict | None) -> str:
    """The label of an option of a list axis: `none`, or its settings as `key=value ...`."""
    if options is None:
        return "none"
    if not isinstance(options, dict):
        return str(options)
    return " ".join(f"{k}={v}" for k, v in options.items())


def _check_rules(file: Path, grid: dict) -> None:
    rules = grid["rules"]
    labels = {axis: [label for label, _ in values] for axis, values in axes(grid)}
    if not isinstance(rules, list):
        raise SparsekitError(f"grid file {file}: rules must be a list of {{when: ..., set: ...}}")
    for i, rule in enumerate(rules, 1):
        if not isinstance(rule, dict) or set(rule) - {"when", "set"} or not isinstance(rule.get("set"), dict):
            raise SparsekitError(f"grid file {file}: rule {i} must be a mapping {{when: {{axis: label(s)}}, "
                                 f"set: {{step: options}}}}; got {rule!r}")
        when = rule.get("when") or {}
        if not isinstance(when, dict):
            raise SparsekitError(f"grid file {file}: rule {i}: when must map axes to labels, got {when!r}")
        for axis, wanted in when.items():
            if axis not in labels:
                raise SparsekitError(f"grid file {file}: rule {i}: when names {axis!r}, not an axis of the grid "
                                     f"({', '.join(labels)})")
            for label in wanted if isinstance(wanted, list) else [wanted]:
                if label not in labels[axis]:
                    raise SparsekitError(f"grid file {file}: rule {i}: {axis} has no label {label!r}; its labels: "
                                         f"{', '.join(map(str, labels[axis]))}")
        for step, patch in rule["set"].items():
            if step not in labels:
                raise SparsekitError(f"grid file {file}: rule {i}: set names {step!r}, not an axis of the grid "
                                     f"({', '.join(labels)}); rules refine a point's steps, never add one")
            if patch is not None and not isinstance(patch, dict):
                raise SparsekitError(f"grid file {file}: rule {i}: set {step} must be a mapping of options "
                                     f"(or null: remove the step), got {patch!r}")


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: mappings merge key by key, `None` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def labelled_points(grid: dict) -> list[tuple[dict[str, str], list[dict]]]:
    """Every point as (its label on each axis, its recipe): the product of the axes, the rules applied."""
    axes_ = axes(grid)
    rules = grid.get("rules") or []
    out = []
    for combo in itertools.product(*[values for _, values in axes_]):
        labels = {axis: label for (axis, _), (label, _) in zip(axes_, combo)}
        steps = {axis: copy.deepcopy(options) for (axis, _), (_, options) in zip(axes_, combo)}
        for rule in rules:
            when = rule.get("when") or {}
            if all(labels[a] in (w if isinstance(w, list) else [w]) for a, w in when.items()):
                for step, patch in rule["set"].items():
                    if steps[step] is not None:  # a rule refines the steps a point has; it never adds one
                        steps[step] = _merge_patch(steps[step], patch)
        out.append((labels, [{axis: steps[axis]} for axis, _ in axes_ if steps[axis] is not None]))
    return out


def points(grid: dict) -> list[list[dict]]:
    """The recipes of the grid: the cartesian product of its axes (in the order the file lists them)."""
    return [recipe for _, recipe in labelled_points(grid)]


def point_id(recipe: list[dict]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def protocol(grid: dict) -> dict:
    """The grid's protocol (`PROTOCOL_KEYS`, defaults filled in, as JSON would read it back)."""
    full = _with_defaults(grid)
    return json.loads(json.dumps({key: full[key] for key in PROTOCOL_KEYS}))


def check_protocol(out: Path, grid: dict) -> None:
    """Refuse to add points to a folder that holds points measured under another protocol."""
    want = protocol(grid)
    found: list[tuple[str, dict]] = []
    if (out / "grid.json").exists():
        found.append(((out / "grid.json").name, protocol(json.loads((out / "grid.json").read_text()))))
    found += [(f"point {row.get('name', row['id'])!r}", row["protocol"]) for row in finished(out).values()
              if "protocol" in row]  # lines written before the protocol was stated: grid.json speaks for them
    for where, got in found:
        if got != want:
            diff = "; ".join(f"{key} {got.get(key)!r} there, {want.get(key)!r} in this grid" for key in PROTOCOL_KEYS
                             if got.get(key) != want.get(key))
            raise SparsekitError(f"{out} holds points measured under another protocol ({where}: {diff}); one folder "
                                 "holds one protocol so that its points compare: use another --out, or the same "
                                 "protocol")


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


def claim(folder: Path, pid: str) -> Path | None:
    """Take point `pid` for this process (a file holding the process id); None when a live process holds it.

    Several workers may run one grid into one folder: each takes the next point nobody holds, so the
    cores split the grid without a plan, and the claim of a killed worker is taken over.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pid}.pid"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # atomic: one creator wins
        except FileExistsError:
            try:
                text = path.read_text().strip()
            except FileNotFoundError:
                continue  # released this instant: try again
            if not text.isdigit():
                # being written by a worker that claimed it this instant, or left empty by one that died
                # between creating and writing it: a few seconds settle which
                if time.time() - path.stat().st_mtime < 10:
                    return None
                path.unlink(missing_ok=True)
                continue
            try:
                os.kill(int(text), 0)
                return None
            except ProcessLookupError:
                path.unlink(missing_ok=True)  # its worker died: take the point over
                continue
            except PermissionError:  # alive, another user's
                return None
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return path
    return None


def _append(file: Path, row: dict) -> None:
    """Append one whole line in a single O_APPEND write: lines of concurrent workers never interleave, and
    a crash loses at most the point being written."""
    fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(row) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def run_point(grid: dict, recipe: list[dict], progress: bool = True) -> dict:
    """Compress (and convert, unless the grid says `pack: false`), score and optionally benchmark one point."""
    from sparsekit.api import benchmark, compress, convert, evaluate, storage_bits
    from sparsekit.eval.size import compressed_bytes
    from sparsekit.models.adapters import get_adapter
    from sparsekit.models.loader import load_model, require_tokenizer
    from sparsekit.prune.patterns import masks_sparsity

    calib = {**CALIBRATION_DEFAULTS, **(grid.get("calibration") or {})}
    model, tokenizer = load_model(grid["model"], dtype=grid.get("dtype", "auto"), device="cpu")
    require_tokenizer(tokenizer, grid["model"], "a sweep")
    storage: dict = {}
    packed: dict = {}
    steps: list = []  # step records, as compress returns them
    masks: dict = {}
    start = time.perf_counter()
    if recipe:
        # pack: false keeps every projection a simulated dense weight, so that bytes are what each format
        # stores (packed_bits_per_weight: e.g. a 1-bit mask + int4 codes) even where no packed layout exists yet
        make = convert if grid.get("pack", True) else compress
        result = make(model, recipe, tokenizer, calib=calib["source"], nsamples=calib["nsamples"],
                      seqlen=calib["seqlen"], seed=calib["seed"], device=grid.get("device", "auto"), progress=progress)
        storage, packed, steps, masks = result.storage, result.packed, result.steps, result.masks
    seconds = time.perf_counter() - start
    report = evaluate(model, tokenizer, ppl=grid["ppl"], seqlen=grid["seqlen"], limit=grid["limit"],
                      progress=progress, storage=storage or None)
    size = report["bytes"]
    if grid.get("dense_bits"):
        # e.g. an fp32-evaluated model sized as stored in bf16: pruned-only projections, embeddings, norms and
        # the floating buffers of packed modules at dense_bits, quantized codes at their format's bits
        bits = grid["dense_bits"]
        size = compressed_bytes(model, storage_bits(get_adapter(model), steps, masks, dense_bits=bits) if steps
                                else {}, dense_bits=bits)
    row = {"id": point_id(recipe), "recipe": recipe, "name": Recipe.from_list(recipe).describe() if recipe else "dense",
           "ppl": report["ppl"], "tokens": report["tokens"], "bytes": size,
           # what the masks removed: weights that merely quantize to 0 are not pruned
           "sparsity": masks_sparsity(masks) if masks else 0.0,
           "packed": sorted(set(packed.values())), "compress_seconds": seconds, "device": report["device"],
           "versions": report["versions"], "date": report["date"]}
    if grid["tasks"]:
        from sparsekit.eval.harness import run_tasks

        row["tasks"] = run_tasks(model, tokenizer, grid["tasks"], limit=grid["task_limit"], progress=progress)
        row["task_limit"] = grid["task_limit"]
    if grid.get("bench"):
        b = benchmark(model, **grid["bench"])
        row.update(latency_ms=b["latency_ms"], tokens_per_s=b["tokens_per_s"], peak_mem_bytes=b["peak_mem_bytes"],
                   joules_per_token=b["joules_per_token"], bench_device=b["device"])
    return row


def run_sweep(grid_path: str | os.PathLike, out_dir: str | os.PathLike, progress: bool = True, *,
              executor: str = "local", address: str | None = None, cpus_per_point: int | None = None,
              gpus_per_point: float | None = None) -> Path:
    """Run (or resume, or share with other workers) a sweep; return the report path.

    executor: 'local' runs the points in this process (several processes may share DIR, see `claim`);
    'ray' runs one Ray task per point (`run_sweep_ray`) and this process appends their rows. Either
    way `points.jsonl` gets the same rows and the same report is rendered.
    """
    grid = load_grid(grid_path)
    out = Path(out_dir).expanduser()
    if executor not in EXECUTORS:
        raise SparsekitError(f"executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if executor == "ray":
        ray = _import_ray()  # before anything is written: a missing extra is an error with nothing half-done
    elif address is not None or cpus_per_point is not None or gpus_per_point is not None:
        raise SparsekitError("--address, --cpus-per-point and --gpus-per-point belong to --executor ray")
    out.mkdir(parents=True, exist_ok=True)
    check_protocol(out, grid)
    (out / "grid.json").write_text(json.dumps(grid, indent=2) + "\n")
    stated = protocol(grid)
    claims = out / "claims"
    todo = [r for r in points(grid) if point_id(r) not in finished(out)]
    if executor == "ray":
        _run_ray(ray, grid, todo, out, stated, progress, address, cpus_per_point, gpus_per_point)
    else:
        _run_local(grid, todo, out, stated, progress)
    try:
        claims.rmdir()  # only when empty: no other worker holds a point
    except OSError:
        pass
    return render(out)


EXECUTORS = ("local", "ray")


def _run_local(grid: dict, todo: list[list[dict]], out: Path, stated: dict, progress: bool) -> None:
    from tqdm.auto import tqdm

    claims = out / "claims"
    others = 0
    bar = tqdm(todo, desc="sweep", unit="point", disable=not progress)
    for recipe in bar:
        pid = point_id(recipe)
        if pid in finished(out):  # another worker finished it meanwhile
            continue
        held = claim(claims, pid)
        if held is None:
            others += 1
            bar.set_postfix(other_workers=others)
            continue
        try:
            if pid in finished(out):  # finished and released by another worker between the check and the claim
                continue
            row = run_point(grid, recipe, progress)
            row["protocol"] = stated  # each line says how it was measured (check_protocol reads it)
            _append(out / "points.jsonl", row)
        finally:
            held.unlink(missing_ok=True)  # also when stopped: the point is free again at once
    bar.close()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SparsekitError("--executor ray needs Ray, an optional extra: pip install 'sparsekit[ray]'") from None
    return ray


#: environment a Ray worker needs to find what this process finds (data, caches, offline mode)
RAY_ENV = ("SPARSEKIT_DATA", "SPARSEKIT_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _ray_point(grid: dict, recipe: list[dict]) -> dict:
    """One point in a Ray worker: no progress bars (they would interleave in the driver's log)."""
    return run_point(grid, recipe, progress=False)


def _run_ray(ray: Any, grid: dict, todo: list[list[dict]], out: Path, stated: dict, progress: bool,
             address: str | None, cpus: int | None, gpus: float | None) -> None:
    """One Ray task per point with the resources it needs; this process alone appends the rows, so
    `points.jsonl` stays one whole line per point, and a failed point does not stop the others."""
    from tqdm.auto import tqdm

    started = not ray.is_initialized()
    if started:
        env = {k: os.environ[k] for k in RAY_ENV if k in os.environ}
        ray.init(address=address, runtime_env={"env_vars": env} if env else None, include_dashboard=False,
                 logging_level="ERROR", log_to_driver=False)
    try:
        device = str(grid.get("device", "auto"))
        resources = ray.cluster_resources()
        if gpus is None:  # a point calibrates where the grid says; 'auto' means a GPU where the cluster has one
            gpus = 1.0 if device.startswith("cuda") or (device == "auto" and resources.get("GPU", 0) > 0) else 0.0
        for what, need in (("GPU", gpus), ("CPU", float(cpus or 1))):
            if need > resources.get(what, 0):  # Ray would queue the tasks forever
                raise SparsekitError(f"each point reserves {need:g} {what}(s) but the Ray cluster has "
                                     f"{resources.get(what, 0):g}: lower --{what.lower()}s-per-point or add nodes")
        remote = ray.remote(num_cpus=cpus or 1, num_gpus=gpus, max_retries=0)(_ray_point)
        claims = out / "claims"
        pending: dict[Any, tuple[list[dict], Path]] = {}
        for recipe in todo:
            held = claim(claims, point_id(recipe))  # a local worker on the same DIR keeps its points
            if held is None:
                continue
            if point_id(recipe) in finished(out):  # finished and released by a local worker meanwhile
                held.unlink(missing_ok=True)
                continue
            pending[remote.remote(grid, recipe)] = (recipe, held)
        failed: list[str] = []
        bar = tqdm(total=len(pending), desc="sweep (ray)", unit="point", disable=not progress)
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    recipe, held = pending.pop(ref)
                    try:
                        row = ray.get(ref)
                    except Exception as exc:  # the task's own error, re-raised by Ray
                        failed.append(f"{Recipe.from_list(recipe).describe() if recipe else 'dense'}: "
                                      f"{getattr(exc, 'cause', None) or exc}")
                    else:
                        row["protocol"] = stated
                        _append(out / "points.jsonl", row)
                    finally:  # also when stopped while collecting it: the point is free again
                        held.unlink(missing_ok=True)
                    bar.update()
        finally:
            for ref, (_, held) in pending.items():  # stopped: cancel what runs, free the points
                ray.cancel(ref, force=True)
                held.unlink(missing_ok=True)
            bar.close()
        if failed:
            raise SparsekitError(f"{len(failed)} point(s) failed on Ray (the others are in {out / 'points.jsonl'}; "
                                 f"re-running resumes): " + "; ".join(failed))
    finally:
        if started:
            ray.shutdown()


def pareto_front(rows: list[dict], metric: str) -> list[dict]:
    """Rows no other row beats on both bytes and `metric` (both lower-better)."""
    front, best = [], float("inf")
    for r in sorted(rows, key=lambda r: (r["bytes"], r["ppl"][metric])):
        if r["ppl"][metric] < best:
            front.append(r)
            best = r["ppl"][metric]
    return front


def _grid_labels(out: Path) -> tuple[list[tuple[str, list[str]]], dict[str, dict[str, str]]]:
    """The axes of the folder's grid (step, labels) and each point id's labels (empty without grid.json)."""
    grid_file = out / "grid.json"
    if not grid_file.exists():
        return [], {}
    grid = json.loads(grid_file.read_text())
    return ([(axis, [label for label, _ in values]) for axis, values in axes(grid)],
            {point_id(recipe): labels for labels, recipe in labelled_points(grid)})


def markdown_table(out: str | os.PathLike) -> str:
    """The finished points of `out` as a markdown grid: one row per label of the first axes, one column per
    label of the last, "perplexity (MiB)" per point (the first perplexity set), Pareto points in bold,
    `–` where a point is not finished. Labels without any finished point are left out."""
    out = Path(out).expanduser()
    rows = list(finished(out).values())
    axes_, labels = _grid_labels(out)
    if not rows or not axes_:
        raise SparsekitError(f"{out} has no finished points of a sweep (points.jsonl and grid.json) to tabulate")
    metric = sorted(rows[0]["ppl"])[0]
    front = {r["id"] for r in pareto_front(rows, metric)}
    cell = {tuple(labels[r["id"]].values()): r for r in rows if r["id"] in labels}
    *row_axes, (col_axis, col_labels) = axes_
    cols = [c for c in col_labels if any(key[-1] == c for key in cell)]
    row_keys = [k for k in itertools.product(*[ls for _, ls in row_axes]) if any(key[:-1] == k for key in cell)]
    head = " x ".join(axis for axis, _ in row_axes) or metric
    lines = [f"| {head} | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for key in row_keys:
        vals = []
        for c in cols:
            r = cell.get((*key, c))
            text = "–" if r is None else f"{r['ppl'][metric]:.1f} ({r['bytes'] / 2 ** 20:.0f})"
            vals.append(f"**{text}**" if r is not None and r["id"] in front else text)
        lines.append(f"| {' + '.join(key) or col_axis} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def _pareto_plot(out: Path, rows: list[dict], metric: str) -> str:
    """Perplexity vs bytes with the frontier; a two-axis grid gets one colour per label of its first axis and
    one marker per label of its second, so that a trade-off study reads at a glance."""
    import matplotlib.pyplot as plt

    axes_, labels = _grid_labels(out)
    two = len(axes_) == 2 and all(r["id"] in labels for r in rows)
    fig, ax = plt.subplots(figsize=(8, 5) if two else (7.5, 4.5))
    mib = {r["id"]: r["bytes"] / 2 ** 20 for r in rows}
    if two:
        (first, first_labels), (second, second_labels) = axes_
        colours = dict(zip(first_labels, plt.cm.viridis([i / max(1, len(first_labels) - 1) * 0.95
                                                         for i in range(len(first_labels))])))
        markers = {label: "os^vD<>ph*XP8"[i % 13] for i, label in enumerate(second_labels)}
        for r in rows:
            lab = labels[r["id"]]
            ax.scatter(mib[r["id"]], r["ppl"][metric], marker=markers[lab[second]], color=colours[lab[first]], s=36,
                       zorder=3)
    else:
        ax.scatter([mib[r["id"]] for r in rows], [r["ppl"][metric] for r in rows], s=28, zorder=3)
    front = pareto_front(rows, metric)
    ax.plot([mib[r["id"]] for r in front], [r["ppl"][metric] for r in front], "-", color="crimson", lw=1.2,
            label="Pareto frontier", zorder=2)
    on_front = {r["id"] for r in front}
    for r in rows:  # every point named (the frontier's in bold): a reader must find any recipe on the plot
        name = "/".join(labels[r["id"]].values()) if two else r["name"]
        ax.annotate(name, (mib[r["id"]], r["ppl"][metric]), fontsize=6, xytext=(3, 3), textcoords="offset points",
                    fontweight="bold" if r["id"] in on_front else "normal", alpha=1.0 if r["id"] in on_front else 0.75)
    if two:
        present = [labels[r["id"]] for r in rows]
        for label, m in markers.items():
            if any(p[second] == label for p in present):
                ax.scatter([], [], marker=m, color="gray", label=f"{second} {label}")
        for label, c in colours.items():
            if any(p[first] == label for p in present):
                ax.scatter([], [], marker="s", color=c, label=f"{first} {label}")
    grid = json.loads((out / "grid.json").read_text()) if (out / "grid.json").exists() else {}
    bits = grid.get("dense_bits")
    ax.set_xlabel("true weight bytes (MiB" + (f"; values not packed at {bits} bits)" if bits else ")"))
    window = f" (first {grid['limit']} x {grid['seqlen']} tokens)" if grid.get("limit") else ""
    ax.set_ylabel(f"{metric} perplexity{window}")
    if grid.get("model"):
        ax.set_title(f"{grid['model']}: {' x '.join(a for a, _ in axes_)}", fontsize=9)
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7 if two else 8, ncol=2 if two else 1)
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=110)
    plt.close(fig)
    return "pareto.png"


def _task_plot(out: Path, rows: list[dict], tasks: list[str]) -> str:
    """Grouped bars: the headline accuracy of every task, one bar per recipe (seed 001's comparison)."""
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: -r["bytes"])
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.2 * len(tasks) + 2) + 3, 4.5))
    for i, r in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(tasks))]
        ax.bar(xs, [100 * headline(r["tasks"][t]) for t in tasks], width, label=r["name"])
    ax.set_xticks(range(len(tasks)), tasks, fontsize=8)
    ax.set_ylabel("accuracy (%; acc_norm where the task has it)")
    limit = rows[0].get("task_limit")
    ax.set_title("zero-shot accuracy per task" + (f" (first {limit} examples)" if limit else ""), fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    fig.tight_layout()
    fig.savefig(out / "tasks.png", dpi=110, bbox_inches="tight")
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
    if grid.get("pack") is False:
        parts.append("simulated (not packed): bytes from each format's packed bits")
    if grid.get("dense_bits"):
        parts.append(f"bytes with the values not packed at {grid['dense_bits']} bits")
    if tasks:
        parts.append(f"tasks {', '.join(tasks)} ({'all' if grid.get('task_limit') is None else grid['task_limit']}"
                     " examples each)")
    if grid.get("bench"):
        b = grid["bench"]
        parts.append(f"speed: prefill {b.get('prefill')} tokens, decode {b.get('decode')} new tokens, batch 1")
    rows = list(finished(out).values())
    machines = sorted({str(r.get("bench_device") or r.get("device")) for r in rows if r.get("bench_device") or
                       r.get("device")})
    if machines:
        parts.append(f"measured on {', '.join(machines)}")
    versions = sorted({", ".join(f"{k} {v}" for k, v in (r.get("versions") or {}).items() if v) for r in rows})
    if len(versions) == 1:
        parts.append(versions[0])
    return f"<p>{html.escape('; '.join(parts))}</p>"


#: says on the page (and in `data-images-ok`, which tests read through a headless browser) whether every
#: embedded plot decoded: a truncated base64 image otherwise shows as a silent empty box
_IMAGE_CHECK = ("<script>addEventListener('load',()=>{const i=[...document.images],"
                "ok=i.filter(x=>x.complete&&x.naturalWidth>0).length;document.body.dataset.imagesOk=ok+'/'+i.length;"
                "if(ok<i.length)document.body.insertAdjacentHTML('afterbegin',"
                "`<p style='color:red'>${i.length-ok} plot(s) failed to render</p>`)})</script>")


def pruned_sparsity(row: dict) -> float:
    """The fraction of weights a point's prune steps removed (rows written before sparsity came from the
    masks counted every zero, also int4 codes that round to 0: a recipe without a prune step removed none)."""
    if not any(kind in ("prune", "prune_experts") for step in row["recipe"] for kind in step):
        return 0.0
    return float(row.get("sparsity") or 0.0)


def render(out: Path) -> Path:
    """Plots and the self-contained HTML report of the finished points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(finished(out).values())
    if not rows:
        raise SparsekitError(f"{out} has no finished points to report")
    metric = sorted(rows[0]["ppl"])[0]
    images = [_pareto_plot(out, rows, metric)]
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
    speed = any(r.get("tokens_per_s") for r in rows)
    cols = ["name", "MiB", *[f"ppl {k}" for k in sorted(rows[0]["ppl"])], *[f"task {t}" for t in tasks],
            "pruned", *(["tokens/s", "speedup", "latency ms", "J/token"] if speed else []), "packed"]

    def cell(r: dict, c: str) -> str:
        v: Any = r["ppl"].get(c[4:]) if c.startswith("ppl ") else r.get(c)
        if c.startswith("task "):
            v = headline(r["tasks"][c[5:]])
        elif c == "MiB":
            return f"{r['bytes'] / 2 ** 20:.1f}"
        elif c == "pruned":
            return f"{pruned_sparsity(r):.1%}"
        elif c in ("tokens/s", "latency ms", "J/token"):
            v = r.get({"tokens/s": "tokens_per_s", "latency ms": "latency_ms", "J/token": "joules_per_token"}[c])
        elif c == "speedup":
            v = (r["tokens_per_s"] / dense["tokens_per_s"] if dense is not None and dense.get("tokens_per_s")
                 and r.get("tokens_per_s") else None)
            return "" if v is None else f"x{v:.2f}"
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape(", ".join(v) if isinstance(v, list) else str("" if v is None else v))

    table = "".join("<tr>" + "".join(f"<td>{cell(r, c)}</td>" for c in cols) + "</tr>"
                    for r in sorted(rows, key=lambda r: r["bytes"]))
    figs = "".join(f'<img alt="{name}" src="data:image/png;base64,'
                   f'{base64.b64encode((out / name).read_bytes()).decode()}"/>' for name in images)
    page = ("<!doctype html><meta charset='utf-8'><title>sparsekit sweep</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:3px 8px;border-bottom:1px solid #ddd}"
            "img{max-width:48%;margin:4px}</style>" + _IMAGE_CHECK +
            f"<h1>sparsekit sweep: {len(rows)} points</h1>{_protocol(out, tasks)}{figs}<table><tr>"
            + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + f"</tr>{table}</table>")
    (out / "report.html").write_text(page)
    return out / "report.html"
