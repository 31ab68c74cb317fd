"""`sparsekit sweep`: grid validation, every point exactly once across a crash and a restart, the report."""

import json

import pytest

from sparsekit import sweep
from sparsekit.cli import main
from sparsekit.errors import SparsekitError


def _grid(tmp_path, tiny_dir, data_dir, axes: str) -> str:
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


def test_points_are_the_product_of_the_axes(tmp_path, tiny_dir, data_dir):
    grid = sweep.load_grid(_grid(tmp_path, tiny_dir, data_dir, AXES))
    recipes = sweep.points(grid)
    assert len(recipes) == 4 and recipes[0] == [] and len({sweep.point_id(r) for r in recipes}) == 4


def test_a_killed_sweep_resumes_with_every_point_once(tmp_path, tiny_dir, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("SPARSEKIT_DATA", str(data_dir))
    grid = _grid(tmp_path, tiny_dir, data_dir, AXES)
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
def test_bad_grids_fail_before_any_work(tmp_path, tiny_dir, data_dir, axes, message):
    with pytest.raises(SparsekitError, match=message):
        sweep.load_grid(_grid(tmp_path, tiny_dir, data_dir, axes))


def test_sweep_with_tasks_plots_accuracy_per_task(tmp_path, tiny_dir, data_dir, monkeypatch):
    monkeypatch.setenv("SPARSEKIT_DATA", str(data_dir))
    path = _grid(tmp_path, tiny_dir, data_dir, '  prune: [null, {method: magnitude, pattern: "2:4"}]')
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
def test_bad_task_settings_fail_early(tmp_path, tiny_dir, data_dir, extra, message):
    path = _grid(tmp_path, tiny_dir, data_dir, AXES)
    with open(path, "a") as fh:
        fh.write(extra + "\n")
    with pytest.raises(SparsekitError, match=message):
        sweep.load_grid(path)
