"""`sparsekit sweep --executor ray`: a two-point grid on a local Ray instance (2 CPUs) gives the points the
local executor gives; without Ray, or with Ray-only options on the local executor, a one-line error."""

import json
import sys

import pytest

from sparsekit import sweep
from sparsekit.cli import main
from sparsekit.errors import SparsekitError
from tests.test_sweep import _grid

AXES = '  prune: [null, {method: magnitude, pattern: "2:4"}]'
#: what a point measures (time, date and where it ran may differ between executors)
MEASURED = ("id", "recipe", "name", "ppl", "tokens", "bytes", "sparsity", "packed", "protocol")


def _rows(out) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (out / "points.jsonl").read_text().splitlines())}


def test_ray_executor_gives_the_local_executors_points(tmp_path, tiny_dir, data_dir, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("SPARSEKIT_DATA", str(data_dir))
    grid = _grid(tmp_path, tiny_dir, AXES)
    sweep.run_sweep(grid, tmp_path / "local", progress=False)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, logging_level="ERROR",
             runtime_env={"env_vars": {"SPARSEKIT_DATA": str(data_dir)}})
    try:
        assert main(["sweep", "--grid", grid, "--out", str(tmp_path / "ray"), "--executor", "ray", "--quiet"]) == 0
    finally:
        ray.shutdown()
    local, remote = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert len(local) == 2 and local.keys() == remote.keys()
    for pid in local:
        a, b = ({k: r[pid][k] for k in MEASURED if k != "ppl"} for r in (local, remote))
        assert a == b
        for data_set, value in local[pid]["ppl"].items():  # one worker thread vs two: float sums may differ in ulp
            assert remote[pid]["ppl"][data_set] == pytest.approx(value, rel=1e-5)
    assert (tmp_path / "ray" / "report.html").exists() and not (tmp_path / "ray" / "claims").exists()


def test_ray_options_belong_to_the_ray_executor(tmp_path, tiny_dir, capsys):
    grid = _grid(tmp_path, tiny_dir, AXES)
    assert main(["sweep", "--grid", grid, "--out", str(tmp_path / "o"), "--address", "auto"]) == 2
    assert "belong to --executor ray" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_without_ray_the_executor_says_how_to_install_it(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SparsekitError, match=r"pip install 'sparsekit\[ray\]'"):
        sweep.run_sweep(_grid(tmp_path, tiny_dir, AXES), tmp_path / "o", progress=False, executor="ray")
    assert not (tmp_path / "o").exists()


def test_a_point_the_cluster_cannot_place_is_refused_before_it_queues(tmp_path, tiny_dir, data_dir, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("SPARSEKIT_DATA", str(data_dir))
    grid = _grid(tmp_path, tiny_dir, AXES)
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, object_store_memory=100 * 2**20, logging_level="ERROR")
    try:
        with pytest.raises(SparsekitError, match=r"reserves 1 GPU\(s\) but the Ray cluster has 0"):
            sweep.run_sweep(grid, tmp_path / "o", progress=False, executor="ray", gpus_per_point=1)
    finally:
        ray.shutdown()
    assert not (tmp_path / "o" / "points.jsonl").exists()
