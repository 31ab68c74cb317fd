"""`sparsekit sweep`: grid validation, labelled axes and rules, every point exactly once across a crash and a
restart and across workers sharing a folder, one protocol per folder, the report and the markdown table."""

import json

import pytest

from sparsekit import sweep
from sparsekit.cli import main
from sparsekit.errors import SparsekitError


def _grid(tmp_path, tiny_dir, axes: str) -> str:
    path = tmp_path / "grid.yaml"
    path.write_text(f"""
model: {tiny_dir}
ppl: [wikitext2]
seqlen: 32
limit: 1
calibration: {{nsamples: 2, seqlen: 32}}
grid:
{axes}
""")
    return str(path)


AXES = """  prune: [null, {method: magnitude, pattern: "2:4"}]
  quantize: [null, {format: int4, group_size: 32}]"""


# load_grid reads no data (nor the model): the validation tests run without the data folder
def test_points_are_the_product_of_the_axes(tmp_path, tiny_dir):
    grid = sweep.load_grid(_grid(tmp_path, tiny_dir, AXES))
    recipes = sweep.points(grid)
    assert len(recipes) == 4 and recipes[0] == [] and len({sweep.point_id(r) for r in recipes}) == 4


def test_a_killed_sweep_resumes_with_every_point_once(tmp_path, tiny_dir, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("SPARSEKIT_DATA", str(data_dir))
    grid = _grid(tmp_path, tiny_dir, AXES)
    out = tmp_path / "out"
    real = sweep.run_point
    calls = []

    def dies_on_the_third(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "run_point", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(grid, out, progress=False)
    assert len((out / "points.jsonl").read_text().splitlines()) == 2
    monkeypatch.setattr(sweep, "run_point", real)
    assert main(["sweep", "--grid", grid, "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(sweep.point_id(r) for r in sweep.points(sweep.load_grid(grid)))
    by_name = {r["name"]: r for r in rows}
    assert by_name["dense"]["bytes"] > by_name["magnitude 2:4 (uniform) + int4 g32 rtn"]["bytes"]
    assert by_name["magnitude 2:4 (uniform) + int4 g32 rtn"]["packed"] == ["int4_semi24"]
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and page.count("<tr>") == 5
    assert "points    4" in capsys.readouterr().out


@pytest.mark.parametrize("axes, message", [
    ("  prunes: [null]", "is not a recipe step"),
    ("  prune: []", "non-empty list"),
    ("  quantize: [{format: int5}]", "int8, int4, int3 and int2"),
    ("  quantize: [{format: int4}]\n  prune: [{method: wanda}]", "put prune steps first"),
])
def test_bad_grids_fail_before_any_work(tmp_path, tiny_dir, axes, message):
    with pytest.raises(SparsekitError, match=message):
        sweep.load_grid(_grid(tmp_path, tiny_dir, axes))


def test_sweep_with_tasks_plots_accuracy_per_task(tmp_path, tiny_dir, data_dir, monkeypatch):
    monkeypatch.setenv("SPARSEKIT_DATA", str(data_dir))
    path = _grid(tmp_path, tiny_dir, '  prune: [null, {method: magnitude, pattern: "2:4"}]')
    with open(path, "a") as fh:
        fh.write("tasks: [arc_easy, rte]\ntask_limit: 3\n")
    out = tmp_path / "out"
    sweep.run_sweep(path, out, progress=False)
    rows = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    assert all(set(r["tasks"]) == {"arc_easy", "rte"} and r["task_limit"] == 3 for r in rows)
    assert all(0.0 <= r["tasks"]["arc_easy"]["acc_norm"] <= 1.0 for r in rows)
    assert (out / "tasks.png").stat().st_size > 0
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<th>task arc_easy</th>" in page
    assert "tasks arc_easy, rte (3 examples each)" in page


@pytest.mark.parametrize("extra, message", [("tasks: [arc_hard]", "tasks must be a list"),
                                            ("task_limit: 0", "task_limit must be")])
def test_bad_task_settings_fail_early(tmp_path, tiny_dir, extra, message):
    path = _grid(tmp_path, tiny_dir, AXES)
    with open(path, "a") as fh:
        fh.write(extra + "\n")
    with pytest.raises(SparsekitError, match=message):
        sweep.load_grid(path)


# Labelled axes, rules, workers, protocol and table: these tests replace run_point by a stand-in (no model), so
# they check the sweep's bookkeeping alone; test_dense_bits_... runs the tiny model.
LABELLED = """model: not-loaded
limit: 1
grid:
  prune:
    "0": null
    "50%": {method: sparsegpt, sparsity: 0.5}
    "2:4": {method: sparsegpt, pattern: "2:4"}
  quantize:
    bf16: null
    int8: {format: int8, method: gptq, joint: false}
    int4: {format: int4, method: gptq, joint: false}
rules:
  - when: {prune: ["50%", "2:4"]}
    set: {quantize: {joint: true}}
  - when: {prune: "0", quantize: int8}
    set: {quantize: {method: rtn, joint: null}}
"""


def _write(tmp_path, text: str, name: str = "grid.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _stand_in(grid: dict, recipe: list[dict], progress: bool = True) -> dict:
    """A point without a model: perplexity grows and bytes shrink with the recipe's length, deterministically."""
    size = len(json.dumps(recipe, sort_keys=True))
    return {"id": sweep.point_id(recipe), "recipe": recipe, "name": json.dumps(recipe),
            "ppl": {"wikitext2": 10.0 + size}, "bytes": 2 ** 20 * (500 - size)}


def test_labelled_axes_and_rules_give_each_point_its_method(tmp_path):
    grid = sweep.load_grid(_write(tmp_path, LABELLED))
    by_label = {(lab["prune"], lab["quantize"]): recipe for lab, recipe in sweep.labelled_points(grid)}
    assert list(by_label)[:3] == [("0", "bf16"), ("0", "int8"), ("0", "int4")]  # the file's order, first axis outer
    assert by_label[("0", "bf16")] == []
    assert by_label[("0", "int8")] == [{"quantize": {"format": "int8", "method": "rtn"}}]  # null removed `joint`
    assert by_label[("0", "int4")] == [{"quantize": {"format": "int4", "method": "gptq", "joint": False}}]
    assert by_label[("2:4", "int8")][1] == {"quantize": {"format": "int8", "method": "gptq", "joint": True}}
    assert by_label[("50%", "bf16")] == [{"prune": {"method": "sparsegpt", "sparsity": 0.5}}]  # no step added
    assert grid["grid"]["quantize"]["int8"] == {"format": "int8", "method": "gptq", "joint": False}  # not mutated
    assert sweep.points(grid) == list(by_label.values())
    # a list axis labels its options by their settings
    listed = sweep.load_grid(_write(tmp_path, 'grid:\n  prune: [null, {method: magnitude, pattern: "2:4"}]\n'))
    assert [lab for lab, _ in sweep.labelled_points(listed)] == [{"prune": "none"},
                                                                 {"prune": "method=magnitude pattern=2:4"}]


@pytest.mark.parametrize("change, message", [
    (('"2:4": {method', '2:4: {method'), "is not a string; quote the labels"),  # YAML reads 2:4 as 124
    (("when: {prune: \"0\", quantize: int8}", "when: {prune: \"0\", quantize: int9}"), "quantize has no label 'int9'"),
    (("when: {prune: [", "when: {drop: ["), "when names 'drop', not an axis"),
    (("set: {quantize: {joint: true}}", "set: {drop_blocks: {n: 1}}"), "never add one"),
    (("set: {quantize: {joint: true}}", "set: {quantize: {format: int4}}"), "have the same recipe"),
    (("set: {quantize: {joint: true}}", "set: {quantize: {method: obs}}"), r"point prune 50% / quantize int8: "),
    (("limit: 1", "limit: 1\npack: yes please"), "pack must be true"),
    (("limit: 1", "limit: 1\ndense_bits: 12"), "dense_bits must be"),
    (("limit: 1", "limit: 1\ncalibration: {samples: 8}"), "calibration must be a mapping of source"),
])
def test_bad_labels_and_rules_fail_before_any_work(tmp_path, change, message):
    old, new = change
    assert old in LABELLED
    with pytest.raises(SparsekitError, match=message):
        sweep.load_grid(_write(tmp_path, LABELLED.replace(old, new)))


def test_the_prune_vs_quant_grid_is_45_points_each_with_its_method():
    """bench/sweeps/prune_vs_quant.yaml: sparsity x format, SparseGPT + GPTQ joint when both, act-order GPTQ
    alone when unpruned, RTN for unpruned int8, bf16 = the mask alone; simulated, sized at 16-bit rest."""
    from pathlib import Path

    grid = sweep.load_grid(Path(__file__).resolve().parents[1] / "bench" / "sweeps" / "prune_vs_quant.yaml")
    points = sweep.labelled_points(grid)
    assert [lab["prune"] for lab, _ in points[::9]] == ["0", "0.25", "0.5", "2:4", "4:8"]
    assert [lab["quantize"] for lab, _ in points[:9]] == ["bf16", "int8", "int4", "int3", "mxfp8", "mxfp6", "mxfp4",
                                                          "fp6", "ternary"]
    assert len({sweep.point_id(r) for _, r in points}) == 45
    for lab, recipe in points:
        steps = {step: options for s in recipe for step, options in s.items()}
        sparsity, fmt = lab["prune"], lab["quantize"]
        if sparsity == "0":
            assert "prune" not in steps
        else:
            mask = {"pattern": sparsity} if ":" in sparsity else {"sparsity": float(sparsity)}
            assert steps["prune"] == {"method": "sparsegpt", **mask}
        if fmt == "bf16":
            assert "quantize" not in steps
        elif sparsity == "0" and fmt == "int8":
            assert steps["quantize"] == {"format": "int8", "method": "rtn"}
        else:
            assert steps["quantize"] == {"format": fmt, "method": "gptq", "joint": sparsity != "0"}
    assert sweep.protocol(grid) == {
        "model": "smollm2-135m", "ppl": ["wikitext2"], "seqlen": 2048, "limit": 4,
        "calibration": {"source": "c4", "nsamples": 8, "seqlen": 512, "seed": 0}, "tasks": [], "task_limit": None,
        "bench": None, "dtype": "float32", "dense_bits": 16, "pack": False}


def test_two_workers_share_one_folder_and_skip_each_others_claims(tmp_path, monkeypatch, capsys):
    """Worker B starts while A computes its first point: B leaves A's claimed point alone and computes the
    rest; A then finds them finished. Every point once; the table shows the grid."""
    path = _write(tmp_path, LABELLED)
    out = tmp_path / "out"
    calls: list[str] = []

    def worker_a_point(grid, recipe, progress=True):
        if not calls:  # A holds its first point: B runs meanwhile, in full
            calls.append("A")
            monkeypatch.setattr(sweep, "run_point", worker_b_point)
            sweep.run_sweep(path, out, progress=False)
            monkeypatch.setattr(sweep, "run_point", worker_a_point)
            return _stand_in(grid, recipe)
        calls.append("A")
        return _stand_in(grid, recipe)

    def worker_b_point(grid, recipe, progress=True):
        assert recipe != [], "B computed the point A holds"
        calls.append("B")
        return _stand_in(grid, recipe)

    monkeypatch.setattr(sweep, "run_point", worker_a_point)
    sweep.run_sweep(path, out, progress=False)
    assert calls == ["A"] + ["B"] * 8
    rows = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(sweep.point_id(r) for r in sweep.points(sweep.load_grid(path)))
    assert not (out / "claims").exists()  # released and cleaned up
    assert main(["sweep", "--out", str(out), "--table"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| prune | bf16 | int8 | int4 |" and [line.split(" | ")[0] for line in table[2:]] == [
        "| 0", "| 50%", "| 2:4"]
    assert table[2].startswith("| 0 | **12.0 (498)** |")  # the dense point: smallest perplexity, on the frontier
    assert main(["sweep", "--out", str(out)]) == 2 and "--grid GRID.yaml is required" in capsys.readouterr().err


def test_claims_are_exclusive_and_a_dead_workers_claim_is_taken_over(tmp_path):
    import os
    import subprocess
    import sys

    held = sweep.claim(tmp_path, "abc")
    assert held is not None and held.read_text() == str(os.getpid())
    assert sweep.claim(tmp_path, "abc") is None  # a live process (this one) holds it
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    held.write_text(dead.stdout.strip())
    assert sweep.claim(tmp_path, "abc") == held and held.read_text() == str(os.getpid())


WORKER = """
import json, os, sys, time
from pathlib import Path
from sparsekit import sweep

folder = Path(sys.argv[3])
(folder / f"ready-{os.getpid()}").touch()
deadline = time.time() + 120
while len(list(folder.glob("ready-*"))) < 2 and time.time() < deadline:  # start together
    time.sleep(0.05)

def point(grid, recipe, progress=True):
    time.sleep(0.2)
    return {"id": sweep.point_id(recipe), "recipe": recipe, "name": str(recipe), "ppl": {"wikitext2": 1.0},
            "bytes": 1, "worker": os.getpid()}

sweep.run_point = point
sweep.run_sweep(sys.argv[1], sys.argv[2], progress=False)
"""


def test_two_processes_on_one_folder_compute_every_point_once(tmp_path):
    import subprocess
    import sys

    path = _write(tmp_path, LABELLED)
    out = tmp_path / "out"
    (tmp_path / "worker.py").write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), path, str(out), str(tmp_path)])
             for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    rows = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(sweep.point_id(r) for r in sweep.points(sweep.load_grid(path)))
    assert {r["worker"] for r in rows} == {p.pid for p in procs}  # both took part


def test_a_folder_refuses_points_of_another_protocol(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "run_point", _stand_in)
    out = tmp_path / "out"
    sweep.run_sweep(_write(tmp_path, LABELLED), out, progress=False)
    rows = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    assert all(r["protocol"]["limit"] == 1 and r["protocol"]["calibration"]["nsamples"] == 128 for r in rows)
    other = _write(tmp_path, LABELLED.replace("limit: 1", "limit: 2"), "other.yaml")
    with pytest.raises(SparsekitError, match="another protocol .grid.json: limit 1 there, 2 in this grid"):
        sweep.run_sweep(other, out, progress=False)
    (out / "grid.json").unlink()  # the lines state their protocol too
    with pytest.raises(SparsekitError, match="another protocol .point .*limit 1 there, 2 in this grid"):
        sweep.run_sweep(other, out, progress=False)
    # the same protocol written out in full (defaults spelled) is the same protocol: nothing to run
    same = LABELLED.replace("limit: 1", "limit: 1\ncalibration: {source: c4, nsamples: 128}\ndtype: auto")
    sweep.run_sweep(_write(tmp_path, same, "same.yaml"), out, progress=False)
    assert (out / "points.jsonl").read_text().splitlines() == [json.dumps(r) for r in rows]


def test_dense_bits_size_what_is_not_packed_at_16_bits(tmp_path, tiny_dir, data_dir, monkeypatch):
    """`dense_bits: 16` sizes an fp32-evaluated model as stored in bf16; `pack: false` (simulated) and `pack:
    true` (packed modules) give the same perplexity and bytes for a 2:4 mask."""
    from sparsekit.models.adapters import get_adapter
    from sparsekit.models.loader import load_model

    monkeypatch.setenv("SPARSEKIT_DATA", str(data_dir))
    axes = '  prune: [null, {method: magnitude, pattern: "2:4"}]'
    results = {}
    for pack in ("false", "true"):
        path = _grid(tmp_path, tiny_dir, axes)
        with open(path, "a") as fh:
            fh.write(f"dtype: float32\ndense_bits: 16\npack: {pack}\n")
        sweep.run_sweep(path, tmp_path / pack, progress=False)
        results[pack] = {r["name"]: r for r in sweep.finished(tmp_path / pack).values()}
    model, _ = load_model(str(tiny_dir), dtype="float32", device="cpu")
    adapter = get_adapter(model)
    projections = sum(linear.weight.numel() for i in range(adapter.num_blocks)
                      for linear in adapter.linears(i).values())
    simulated, packed = results["false"], results["true"]
    dense = simulated["dense"]
    assert dense["bytes"] == sum(p.numel() for p in model.parameters()) * 2  # every weight at 16 bits
    assert simulated["magnitude 2:4 (uniform)"]["bytes"] == dense["bytes"] - projections * (16 - 9) // 8  # 2:4 bf16: 9
    assert simulated["magnitude 2:4 (uniform)"]["packed"] == [] and packed["magnitude 2:4 (uniform)"]["packed"] == [
        "semi24"]
    for name in simulated:
        assert simulated[name]["ppl"] == packed[name]["ppl"] and simulated[name]["bytes"] == packed[name]["bytes"]


def test_report_states_sizes_in_mib_sparsity_from_pruning_speed_and_the_machine(tmp_path, monkeypatch):
    path = _write(tmp_path, LABELLED)
    out = tmp_path / "out"

    def with_speed(grid, recipe, progress=True):
        row = _stand_in(grid, recipe)
        # 0.17: what counting zeros said of an int4 model (codes that round to 0), pruned or not
        row.update(sparsity=0.17, tokens_per_s=10.0 + len(recipe), device="cpu (x86_64, 2 threads)",
                   versions={"torch": "2.13.0"})
        return row

    monkeypatch.setattr(sweep, "run_point", with_speed)
    page = sweep.run_sweep(path, out, progress=False).read_text()
    header = page[page.index("<table>"):page.index("</tr>")]
    assert "<th>MiB</th>" in header and "<th>pruned</th>" in header and "<th>speedup</th>" in header
    rows = {r.split("</td>")[0][4:]: r for r in page.split("<tr>")[2:]}  # name -> its table row
    quant_only = next(r for name, r in rows.items() if "sparsegpt" not in name and "int4" in name)
    pruned = next(r for name, r in rows.items() if "sparsegpt" in name)
    assert "<td>0.0%</td>" in quant_only and "<td>17.0%</td>" in pruned
    dense = rows["[]"]
    assert "<td>x1.00</td>" in dense and f"<td>{(2 ** 20 * 498) / 2 ** 20:.1f}</td>" in dense
    assert "measured on cpu (x86_64, 2 threads)" in page and "torch 2.13.0" in page
