"""The experiment scripts under bench/experiments run end to end (tiny model, tiny protocol)."""

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest
import torch

from sparsekit.checkpoint import load_masks
from tests.bench_scripts import load_script


REPO = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_module_sensitivity_writes_results_and_plots(tiny_dir, data_dir, tmp_path):
    study = _script("module_sensitivity")
    argv = ["--model", str(tiny_dir), "--limit", "1", "--seqlen", "32", "--nsamples", "2", "--calib-seqlen", "32",
            "--types", "q,mlp", "--rates", "0.5,0.9", "--device", "cpu", "--data-dir", str(data_dir),
            "--out", str(tmp_path)]
    assert study.main(argv) == 0
    data = json.loads((tmp_path / f"{tiny_dir.name}_wanda_limit1.json").read_text())
    assert [(r["type"], r["rate"]) for r in data["results"]] == [("q", 0.5), ("q", 0.9), ("mlp", 0.5), ("mlp", 0.9)]
    q50, q90, mlp50, _ = data["results"]
    assert q50["modules"] == 3 and mlp50["modules"] == 9
    assert q90["pruned_weights"] == 3 * 64 * round(0.9 * 64)
    assert all(r["ppl"] > 1 for r in data["results"])
    assert {p.name for p in tmp_path.glob("*.png")} == {f"{tiny_dir.name}_wanda_limit1_rate.png",
                                                        f"{tiny_dir.name}_wanda_limit1_weights.png"}
    assert study.main(argv) == 0  # resumes: nothing left to do, same results
    assert json.loads((tmp_path / f"{tiny_dir.name}_wanda_limit1.json").read_text())["results"] == data["results"]


def test_prune_table_runs_and_tabulates(tiny_dir, data_dir, tmp_path, capsys):
    table = _script("prune_table")
    argv = ["--model", str(tiny_dir), "--recipes", "magnitude-2:4,wanda-50,mxfp4-rtn", "--limit", "1", "--seqlen", "32",
            "--nsamples", "2", "--calib-seqlen", "32", "--device", "cpu", "--data-dir", str(data_dir),
            "--out", str(tmp_path)]
    assert table.main(argv) == 0
    files = sorted(p.name for p in tmp_path.glob("*.json"))
    assert files == [f"{tiny_dir.name}_magnitude-2-4_limit1.json", f"{tiny_dir.name}_mxfp4-rtn_limit1.json",
                     f"{tiny_dir.name}_wanda-50_limit1.json"]
    report = json.loads((tmp_path / files[2]).read_text())
    assert report["mask_sparsity"] == 0.5 and report["prune_seconds"] > 0 and report["recipe_name"] == "wanda-50"
    assert report["sparsity_per_type"]["q"] == 0.5
    capsys.readouterr()
    assert table.main(["--table", "--out", str(tmp_path)]) == 0
    assert "| wanda-50 | 0.500 |" in capsys.readouterr().out
    quant = json.loads((tmp_path / files[1]).read_text())
    assert table.main(["--table", "--bytes", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "true size (MiB)" in printed and f"| mxfp4-rtn | 0.000 | {quant['ppl']['wikitext2']:.3f} | " \
        f"{quant['bytes'] / 2 ** 20:.1f} |" in printed
    assert quant["bytes"] < report["bytes"]  # 4.25-bit projections vs 50% unstructured fp32 + bitmask


def test_prune_vs_quant_conversion_copies_every_number_exactly(tmp_path):
    """The grid's former script wrote its own JSON lines; bench/results/prune_vs_quant/convert.py turned them
    into the sweep's points of bench/sweeps/prune_vs_quant.yaml: every number bit for bit, the grid's ids
    and protocol; a line of another recipe or protocol is refused."""
    from sparsekit import sweep
    from sparsekit.errors import SparsekitError

    path = REPO / "bench" / "results" / "prune_vs_quant" / "convert.py"
    spec = importlib.util.spec_from_file_location("convert", path)
    convert = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convert)
    grid = sweep.load_grid(convert.GRID)
    protocol = {"seqlen": 2048, "limit": 4, "calibration": {"source": "c4", "nsamples": 8, "seqlen": 512, "seed": 0}}

    def line(sparsity: str, fmt: str, recipe: list, ppl: float, **changes) -> dict:
        return {"sparsity": sparsity, "format": fmt, "recipe": recipe, "ppl": ppl, "tokens": 8188, "bytes": 123456789,
                "compress_seconds": 1.5, "protocol": protocol, "model": "smollm2-135m", "device": "cpu",
                "versions": {"torch": "x"}, "date": "2026-11-30T18:26:54+00:00",
                "command": "python bench/experiments/prune_vs_quant.py ", **changes}

    joint = [{"prune": {"method": "sparsegpt", "pattern": "2:4"}}, {"quantize": {"format": "int4", "method": "gptq",
                                                                                "joint": True}}]
    old = [line("0", "int8", [{"quantize": {"format": "int8", "method": "rtn"}}], 24.17856191873295),
           line("2:4", "int4", joint, 0.1 + 0.2)]
    (tmp_path / "old.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    out = tmp_path / "out"
    assert convert.main([str(tmp_path / "old.jsonl"), "--out", str(out)]) == 0
    rows = [json.loads(text) for text in (out / "points.jsonl").read_text().splitlines()]
    labels = {sweep.point_id(recipe): lab for lab, recipe in sweep.labelled_points(grid)}
    assert [labels[r["id"]] for r in rows] == [{"prune": "0", "quantize": "int8"}, {"prune": "2:4", "quantize": "int4"}]
    assert [r["ppl"]["wikitext2"] for r in rows] == [24.17856191873295, 0.1 + 0.2]  # bit for bit
    assert [r["bytes"] for r in rows] == [123456789, 123456789] and rows[1]["tokens"] == {"wikitext2": 8188}
    assert all(r["protocol"] == sweep.protocol(grid) and r["packed"] == [] for r in rows)
    assert json.loads((out / "grid.json").read_text()) == grid and (out / "pareto.png").is_file()
    assert sweep.markdown_table(out).splitlines()[2:] == ["| 0 | 24.2 (118) | – |", "| 2:4 | – | **0.3 (118)** |"]
    with pytest.raises(SystemExit, match="runs once"):
        convert.main([str(tmp_path / "old.jsonl"), "--out", str(out)])
    with pytest.raises(SparsekitError, match="the grid's point is"):  # unpruned int4 is act-order GPTQ, not RTN
        convert.convert([line("0", "int4", [{"quantize": {"format": "int4", "method": "rtn"}}], 30.0)], grid)
    with pytest.raises(SparsekitError, match="another protocol"):
        convert.convert([line("2:4", "int4", joint, 30.0, protocol={**protocol, "limit": 40})], grid)
    with pytest.raises(SparsekitError, match="appears twice"):
        convert.convert(old + old[:1], grid)


def test_structured_study_runs_resumes_and_plots(tiny_dir, data_dir, tmp_path):
    study = _script("structured")
    argv = ["--model", str(tiny_dir), "--configs", "dense,blocks-last-2,mlp-2,mixed-5,heads-33,channels-25,search-25",
            "--limit", "1",
            "--seqlen", "32", "--nsamples", "2", "--decode", "4", "--repeats", "1", "--device", "cpu",
            "--data-dir", str(data_dir), "--out", str(tmp_path), "--save-dir", str(tmp_path / "ckpt")]
    assert study.main(argv) == 0
    data = json.loads((tmp_path / f"{tiny_dir.name}_limit1.json").read_text())
    res = data["results"]
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"blocks-last-2", "mlp-2", "mixed-5", "heads-33",
                                                               "channels-25", "search-25"}
    search = res["search-25"]
    assert 0 < search["params_removed"] and set(search["removed"][0]["widths"]) == {"0", "1", "2"}
    assert (tmp_path / f"{tiny_dir.name}_limit1_search_widths.png").is_file()
    # mixed-5 reused mlp-2's NRI scores and added the attention ones (each candidate scored alone)
    mixed = json.loads((tmp_path / "ckpt" / "mixed-5" / "sparsekit.json").read_text())["steps"][0]["scores"]
    mlp2 = json.loads((tmp_path / "ckpt" / "mlp-2" / "sparsekit.json").read_text())["steps"][0]["scores"]
    assert set(mixed["nri"]) == {f"{i}:{k}" for i in range(3) for k in ("attention", "mlp")}
    assert {k: v for k, v in mixed["nri"].items() if k.endswith(":mlp")} == mlp2["nri"]
    assert mixed["base_loss"] == mlp2["base_loss"]
    assert res["dense"]["params_removed"] == 0 and res["blocks-last-2"]["removed"] == [[1, 2]]
    assert res["mlp-2"]["params_removed"] == 2 * 3 * 64 * 96
    assert all(r["decode"]["tokens_per_s"] > 0 and r["ppl"] > 1 for r in res.values())
    assert (tmp_path / f"{tiny_dir.name}_limit1.png").is_file()
    assert study.main(argv) == 0  # resumes: nothing recomputed
    assert json.loads((tmp_path / f"{tiny_dir.name}_limit1.json").read_text())["results"] == res
    # re-timing rebuilds every model without calibration (checkpoints; blocks also from their indices)
    import shutil

    shutil.rmtree(tmp_path / "ckpt" / "blocks-last-2")
    assert study.main(argv + ["--retime"]) == 0
    retimed = json.loads((tmp_path / f"{tiny_dir.name}_limit1.json").read_text())["results"]
    assert all(r["decode"]["retimed"] and r["decode"]["tokens_per_s"] > 0 for r in retimed.values())
    assert {n: r["ppl"] for n, r in retimed.items()} == {n: r["ppl"] for n, r in res.items()}
    # a partial pass: dense and mlp-2 again; every other record keeps the dense rate of the pass it was timed in
    assert study.main(argv + ["--retime", "--configs", "mlp-2"]) == 0
    again = json.loads((tmp_path / f"{tiny_dir.name}_limit1.json").read_text())["results"]
    assert again["mlp-2"]["decode"]["dense_tokens_per_s"] == again["dense"]["decode"]["tokens_per_s"]
    assert again["heads-33"]["decode"] == {**retimed["heads-33"]["decode"],
                                           "dense_tokens_per_s": retimed["dense"]["decode"]["tokens_per_s"]}
    assert study.main(argv + ["--table"]) == 0
    table = study.table(tmp_path / f"{tiny_dir.name}_limit1.json").splitlines()
    assert len(table) == 2 + len(res) and table[2].startswith("| dense |  | 0.0 M (0.0%) |")
    assert "blocks 1,2" in next(line for line in table if line.startswith("| blocks-last-2 |"))
    assert "per block" in next(line for line in table if line.startswith("| search-25 |")) or \
        "sublayers removed" in next(line for line in table if line.startswith("| search-25 |"))


def test_model_speed_smoke_on_cpu(tmp_path):
    speed = _script("model_speed")
    argv = ["--preset", "tiny", "--device", "cpu", "--dtype", "float32", "--prefill", "16", "--decode", "2",
            "--repeats", "1", "--variants", "dense,int4_g128_semi24", "--out", str(tmp_path),
            "--jsonl", str(tmp_path / "lines.jsonl")]
    assert speed.main(argv) == 0
    data = json.loads((tmp_path / "model_speed_tiny_cpu.json").read_text())
    rows = data["rows"]
    assert rows["int4_g128_semi24"]["packed"] == ["int4_semi24"]
    assert rows["int4_g128_semi24"]["weight_bytes"] < rows["dense"]["weight_bytes"]
    assert rows["dense"]["decode_speedup_vs_dense"] == 1.0 and rows["dense"]["joules_per_token"] is None
    assert data["triton_autotune"] is None  # no Triton tiles to tune off a GPU
    # one line per variant, as each was measured, with the run's metadata (what gpu_check brings back)
    lines = [json.loads(line) for line in (tmp_path / "lines.jsonl").read_text().splitlines()]
    assert [(r["variant"], list(r["rows"])) for r in lines] == [("dense", ["dense"]),
                                                                  ("int4_g128_semi24", ["int4_g128_semi24"])]
    assert lines[1]["rows"]["int4_g128_semi24"] == rows["int4_g128_semi24"] and lines[1]["preset"] == "tiny"


def test_cpu_decode_times_packed_variants_loaded_from_their_checkpoint(tmp_path, capsys):
    """A packed variant is built and saved by one process and timed by another that loads the checkpoint, so
    its peak memory is a deployment's; its row says so and names the layout the loaded model runs."""
    decode = _script("cpu_decode")
    out = tmp_path / "decode.json"
    argv = ["--variants", "dense fp32,int4 g128", "--prefill", "8", "--decode", "2", "--repeats", "1", "--out", str(out)]
    assert decode.main(argv) == 0
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["int4 g128"]["from_checkpoint"] and not rows["dense fp32"]["from_checkpoint"]
    assert rows["int4 g128"]["layouts"] == ["int4"] and rows["int4 g128"]["bytes"] < rows["dense fp32"]["bytes"] / 2
    assert "| int4 g128 |" in capsys.readouterr().out


def test_zero_shot_runs_resumes_and_tabulates(tiny_dir, data_dir, tmp_path, capsys):
    zs = _script("zero_shot")
    argv = ["--model", str(tiny_dir), "--recipes", "dense,magnitude-2:4", "--tasks", "piqa,lambada", "--limit", "3",
            "--data-dir", str(data_dir), "--out", str(tmp_path)]
    assert zs.main(argv) == 0
    files = sorted(p.name for p in tmp_path.glob("*.json"))
    assert files == [f"{tiny_dir.name}_dense_limit3.json", f"{tiny_dir.name}_magnitude-2-4_limit3.json"]
    report = json.loads((tmp_path / files[0]).read_text())
    assert set(report["tasks"]) == {"piqa", "lambada"} and report["protocol"]["tasks"]["limit"] == 3
    assert zs.main(argv) == 0 and "skip dense" in capsys.readouterr().out
    assert zs.main(["--table", "--limit", "3", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| recipe | piqa | lambada | mean |" in printed and "| magnitude-2:4 |" in printed


def test_zero_shot_scores_prune_table_checkpoints(tiny_dir, data_dir, tmp_path):
    """`prune_table.py --save-dir` + `zero_shot.py --checkpoints` score the very weights an in-process run
    scores; a checkpoint of another calibration protocol is refused."""
    calib = ["--nsamples", "2", "--calib-seqlen", "32"]
    assert _script("prune_table").main(["--model", str(tiny_dir), "--recipes", "wanda-2:4", "--limit", "1",
                                        "--seqlen", "32", *calib, "--device", "cpu", "--data-dir", str(data_dir),
                                        "--out", str(tmp_path / "ppl"), "--save-dir", str(tmp_path / "ckpt")]) == 0
    assert (tmp_path / "ckpt" / f"{tiny_dir.name}_wanda-2-4" / "sparsekit.json").is_file()
    zs = _script("zero_shot")
    common = ["--model", str(tiny_dir), "--recipes", "wanda-2:4", "--tasks", "piqa", "--limit", "4",
              "--device", "cpu", "--data-dir", str(data_dir)]
    assert zs.main(common + calib + ["--out", str(tmp_path / "fresh")]) == 0
    assert zs.main(common + calib + ["--out", str(tmp_path / "reused"), "--checkpoints", str(tmp_path / "ckpt")]) == 0
    name = f"{tiny_dir.name}_wanda-2-4_limit4.json"
    fresh, reused = (json.loads((tmp_path / d / name).read_text()) for d in ("fresh", "reused"))
    assert reused["checkpoint"].endswith(f"{tiny_dir.name}_wanda-2-4") and reused["compress_seconds"] is None
    assert reused["tasks"] == fresh["tasks"] and reused["calibration"] == fresh["calibration"]
    with pytest.raises(SystemExit, match="calibration"):
        zs.main(common + ["--nsamples", "4", "--calib-seqlen", "32", "--out", str(tmp_path / "other"),
                          "--checkpoints", str(tmp_path / "ckpt")])
    # --saved: any checkpoint as it is, named by the caller
    saved = ["--recipes", "", "--saved", f"mine={tmp_path / 'ckpt' / f'{tiny_dir.name}_wanda-2-4'}"]
    assert zs.main(common + saved + ["--out", str(tmp_path / "saved")]) == 0
    mine = json.loads((tmp_path / "saved" / f"{tiny_dir.name}_mine_limit4.json").read_text())
    assert mine["tasks"] == fresh["tasks"] and mine["checkpoint_recipe"][0]["prune"]["method"] == "wanda"
    assert mine["calibration"]["nsamples"] == 2 and mine["recipe_name"] == "mine"
    assert zs.main(common + ["--recipes", "", "--saved", f"x={tmp_path}", "--out", str(tmp_path / "bad")]) == 2
    with pytest.raises(SystemExit, match="forward_dtype"):  # compressed with fp32 forwards, asked for bf16
        zs.main(common + calib + ["--calib-dtype", "bfloat16", "--out", str(tmp_path / "bf16"),
                                  "--checkpoints", str(tmp_path / "ckpt")])


def test_zero_shot_names_checkpoints_with_prune_table_function_and_results_keep_their_names():
    """One `checkpoint_stem`: zero_shot.py uses prune_table.py's own, so `--checkpoints` finds every folder
    `--save-dir` wrote (YAML recipes too); the committed result files keep the names both scripts compute."""
    import inspect

    table, zs = _script("prune_table"), _script("zero_shot")
    assert Path(inspect.getsourcefile(zs.checkpoint_stem)).name == "prune_table.py"
    for recipe in ("wanda-2:4", "sparsegpt-2:4+int4-joint", "recipes/my sweep.yaml", "/abs/mine.yml"):
        assert zs.checkpoint_stem("models/smollm2-135m", recipe) == table.checkpoint_stem("smollm2-135m", recipe)
    assert table.checkpoint_stem("m", "recipes/my sweep.yaml") == "m_my-sweep"
    assert table.checkpoint_stem("m", "sparsegpt-2:4+int4-joint") == "m_sparsegpt-2-4-int4-joint"
    # zero_shot's result names keep '+', prune_table's do not: as the files under bench/results/ are named
    assert zs.result_path(Path("o"), "m", "sparsegpt-2:4+int4-joint", 100).name == \
        "m_sparsegpt-2-4+int4-joint_limit100.json"
    assert zs.result_path(Path("o"), "m", "recipes/x.yaml", None).name == "m_x_full.json"
    results = REPO / "bench" / "results"
    for script, folders in ((table, ("prune", "quant")), (zs, ("zero_shot",))):
        for file in (f for folder in folders for f in sorted((results / folder).glob("*_limit*.json"))):
            report = json.loads(file.read_text())
            limit = int(file.stem.rpartition("_limit")[2])
            assert script.result_path(file.parent, report["model"], report["recipe_name"], limit) == file


def test_gptq_order_runs_resumes_and_tabulates(tiny_dir, data_dir, tmp_path, capsys):
    study = _script("gptq_order")
    argv = ["--model", str(tiny_dir), "--group-size", "32", "--limit", "1", "--seqlen", "32", "--nsamples", "2",
            "--calib-seqlen", "32", "--data-dir", str(data_dir), "--out", str(tmp_path)]
    assert study.main(argv) == 0
    path = tmp_path / f"{tiny_dir.name}_int4_limit1.json"
    data = json.loads(path.read_text())
    assert list(data["results"]) == ["rtn", "gptq natural order", "gptq act-order"]
    assert data["results"]["gptq act-order"]["recipe"][0]["quantize"]["act_order"] is True
    assert all(r["ppl"] > 1 for r in data["results"].values()) and data["dense_ppl"] > 1
    assert study.main(argv) == 0  # resumes: nothing recomputed
    assert json.loads(path.read_text())["results"] == data["results"]
    assert study.main(argv + ["--table"]) == 0
    assert "| gptq act-order |" in capsys.readouterr().out


def test_nm_study_runs_resumes_and_tabulates_seeds(tiny_dir, data_dir, tmp_path, capsys):
    study = _script("nm_study")
    argv = ["--model", str(tiny_dir), "--patterns", "2:4,50%", "--rows", "ria,ria+permute+dsnot+reconstruct",
            "--seeds", "0,1", "--limit", "1", "--seqlen", "32", "--nsamples", "4", "--calib-seqlen", "32",
            "--data-dir", str(data_dir), "--out", str(tmp_path), "--quiet", "--save-dir", str(tmp_path / "ckpt")]
    assert study.main(argv) == 0
    assert (tmp_path / "ckpt" / "2-4_ria+permute+dsnot+reconstruct_seed1" / "sparsekit.json").is_file()
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    # permutation does not apply to unstructured sparsity: no 50% row with permute
    assert names == ["2-4_ria+permute+dsnot+reconstruct_seed0.json", "2-4_ria+permute+dsnot+reconstruct_seed1.json",
                     "2-4_ria_seed0.json", "2-4_ria_seed1.json", "50pct_ria_seed0.json", "50pct_ria_seed1.json"]
    cell = json.loads((tmp_path / names[0]).read_text())
    assert cell["recipe"][0]["prune"]["permute"] and cell["recipe"][0]["prune"]["reconstruct"]["target"] == "block"
    assert cell["reconstruction"]["blocks"] == 3
    assert cell["reconstruction"]["mean_error_after"] <= cell["reconstruction"]["mean_error_before"]
    assert cell["permuted_modules"] == 6 and cell["calibration"]["seed"] == 0
    seeds = [json.loads((tmp_path / n).read_text())["ppl"] for n in names[2:4]]
    capsys.readouterr()
    assert study.main(argv) == 0  # resumes: every cell exists
    out = capsys.readouterr().out
    assert out.count("skip") == 6
    assert f"| 2:4 | ria | 0,1 | {sum(seeds) / 2:.2f} | {max(seeds) - min(seeds):.2f} |" in out
    assert study.main(argv[:4] + ["--rows", "nope"]) == 2
    assert study.main(["--flops"]) == 0
    assert "block-wise reconstruction" in capsys.readouterr().out


def test_nm_study_every_applicable_cell_is_a_valid_recipe():
    from sparsekit.recipe import load_recipe

    study = _script("nm_study")
    cells = [(p, r) for p in study.PATTERNS for r in study.ROWS if study.applies(p, r)]
    for pattern, row in cells:
        for int4 in (False, True):
            load_recipe(study.recipe_for(pattern, row, int4))
    # an allocation is for unstructured sparsity only; permutation for N:M only
    assert ("50%", "sparsegpt+search+reconstruct-model-64x8") in cells
    assert ("2:4", "sparsegpt+search+reconstruct-model-64x8") not in cells
    assert ("50%", "sparsegpt+permute") not in cells and ("4:8", "sparsegpt+permute") in cells


def test_nm_study_row_calibration_settings_reach_compress(tiny_dir, data_dir, tmp_path, monkeypatch):
    """A row's calib_batch_size / calib_nsamples calibrate its cell (the JSON records them) and stay out of
    its recipe; the study's --nsamples holds for the rows without them."""
    study = _script("nm_study")
    monkeypatch.setitem(study.ROWS, "tiny-calib", {"method": "sparsegpt", "calib_batch_size": 2, "calib_nsamples": 6})
    argv = ["--model", str(tiny_dir), "--patterns", "2:4", "--rows", "tiny-calib,sparsegpt", "--limit", "1",
            "--seqlen", "32", "--nsamples", "4", "--calib-seqlen", "32", "--data-dir", str(data_dir),
            "--out", str(tmp_path), "--quiet"]
    assert study.main(argv) == 0
    cell = json.loads((tmp_path / "2-4_tiny-calib_seed0.json").read_text())
    assert (cell["calibration"]["nsamples"], cell["calibration"]["batch_size"]) == (6, 2)
    assert not set(study.CALIB_KEYS) & set(cell["recipe"][0]["prune"])
    assert json.loads((tmp_path / "2-4_sparsegpt_seed0.json").read_text())["calibration"]["nsamples"] == 4


def test_nm_study_int4_continues_from_the_saved_cell(tiny_dir, data_dir, tmp_path, monkeypatch):
    """--continue-saved: the int4 cell quantizes the saved cell without int4 (masks kept) and adds its times;
    without a saved cell it runs the whole recipe."""
    study = _script("nm_study")
    monkeypatch.setattr(study, "INT4", {"quantize": {"format": "int4", "group_size": 32, "method": "gptq"}})
    argv = ["--model", str(tiny_dir), "--patterns", "2:4", "--rows", "sparsegpt", "--limit", "1", "--seqlen", "32",
            "--nsamples", "4", "--calib-seqlen", "32", "--data-dir", str(data_dir), "--out", str(tmp_path),
            "--quiet", "--save-dir", str(tmp_path / "ckpt")]
    assert study.main(argv) == 0
    base = json.loads((tmp_path / "2-4_sparsegpt_seed0.json").read_text())
    assert study.main(argv + ["--int4", "--continue-saved"]) == 0
    cell = json.loads((tmp_path / "2-4_sparsegpt+int4_seed0.json").read_text())
    assert cell["continued_from"]["checkpoint"] == "2-4_sparsegpt_seed0" and cell["sparsity"] == 0.5
    added = cell["continued_from"]["quantize_seconds"]
    assert cell["compress_seconds"] == pytest.approx(base["compress_seconds"] + added)
    assert cell["recipe"][:-1] == base["recipe"] and cell["recipe"][-1]["quantize"]["format"] == "int4"
    masks = load_masks(tmp_path / "ckpt" / "2-4_sparsegpt+int4_seed0")
    assert masks and all(torch.equal(m, load_masks(tmp_path / "ckpt" / "2-4_sparsegpt_seed0")[n])
                         for n, m in masks.items())
    (tmp_path / "2-4_sparsegpt+int4_seed0.json").unlink()
    assert study.main(argv[:-2] + ["--int4", "--continue-saved"]) == 0  # no --save-dir: the whole recipe
    assert "continued_from" not in json.loads((tmp_path / "2-4_sparsegpt+int4_seed0.json").read_text())


def test_nm_study_heal_row_continues_from_its_saved_row_without_healing(tiny_dir, data_dir, tmp_path, monkeypatch):
    """--continue-saved: a healing row heals the saved checkpoint of the row it heals (distilling the dense
    model, as the whole recipe does) and adds that row's times; it scores as the whole recipe run in one go."""
    study = _script("nm_study")
    monkeypatch.setitem(study.ROWS, "sparsegpt+heal-tiny", {"method": "sparsegpt",
                                                            "heal": {"tokens": 4 * 2 * 32, "seqlen": 32,
                                                                     "batch_size": 2, "lr": 1e-3}})
    argv = ["--model", str(tiny_dir), "--patterns", "2:4", "--limit", "1", "--seqlen", "32", "--nsamples", "4",
            "--calib-seqlen", "32", "--data-dir", str(data_dir), "--quiet"]
    saved = argv + ["--out", str(tmp_path), "--save-dir", str(tmp_path / "ckpt")]
    assert study.main(saved + ["--rows", "sparsegpt"]) == 0
    base = json.loads((tmp_path / "2-4_sparsegpt_seed0.json").read_text())
    assert study.main(saved + ["--rows", "sparsegpt+heal-tiny", "--continue-saved"]) == 0
    cell = json.loads((tmp_path / "2-4_sparsegpt+heal-tiny_seed0.json").read_text())
    added = cell["continued_from"]["heal_seconds"]
    assert cell["continued_from"]["checkpoint"] == "2-4_sparsegpt_seed0"
    assert cell["compress_seconds"] == pytest.approx(base["compress_seconds"] + added)
    assert cell["recipe"][:-1] == base["recipe"] and cell["recipe"][-1]["heal"]["teacher"] is None
    assert cell["heal"]["tokens"] == 4 * 2 * 32 and cell["heal"]["loss_last"] is not None
    assert study.main(argv + ["--out", str(tmp_path / "whole"), "--rows", "sparsegpt+heal-tiny"]) == 0
    whole = json.loads((tmp_path / "whole" / "2-4_sparsegpt+heal-tiny_seed0.json").read_text())
    assert "continued_from" not in whole and whole["recipe"] == cell["recipe"]
    assert cell["ppl"] == pytest.approx(whole["ppl"], rel=1e-3)
    assert cell["heal"]["loss_first"] == pytest.approx(whole["heal"]["loss_first"], rel=1e-4)
    # a record of another run of the same cell (its own seconds) does not pair with the checkpoint
    (tmp_path / "2-4_sparsegpt_seed0.json").write_text(json.dumps({**base, "prune_seconds": base["prune_seconds"] + 1}))
    with pytest.raises(SystemExit, match="not made by the run that wrote"):
        study.main(saved + ["--rows", "sparsegpt+heal-tiny", "--continue-saved", "--force"])


def test_structured_merge_write_keeps_what_another_worker_wrote(tmp_path):
    """A worker that read the file before another re-timed a record writes only its own record back."""
    structured = _script("structured")
    out = tmp_path / "r.json"
    stale = {"results": {"a": {"decode": {"tokens_per_s": 1.0}}}}
    out.write_text(json.dumps({"results": {"a": {"decode": {"tokens_per_s": 2.0, "retimed": True}}}}))
    merged = structured.merge_write(out, {**stale, "results": {**stale["results"], "c": {"ppl": 3.0}}}, ["c"])
    on_disk = json.loads(out.read_text())["results"]
    assert on_disk == merged["results"] == {"a": {"decode": {"tokens_per_s": 2.0, "retimed": True}}, "c": {"ppl": 3.0}}


def test_calib_speed_table_reads_committed_shape(tmp_path, capsys):
    speed = _script("calib_speed")
    data = {"before": "abc1234", "rows": [
        {"variant": "before", "prune_seconds": 200.0, "masks_sha256": "x", "ppl": 90.0},
        {"variant": "bf16-b8", "prune_seconds": 100.0, "masks_sha256": "y", "ppl": 91.0}]}
    (tmp_path / "s.json").write_text(json.dumps(data))
    assert speed.main(["--table", "--out", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "| before | commit abc1234 | 200.0 | 100% | yes | 90.000 |" in out
    assert "| bf16-b8 | + bf16 forwards | 100.0 | 50% | no | 91.000 |" in out
    assert speed.main(["--table", "--out", str(tmp_path / "missing.json")]) == 2
    assert speed.main(["--variants", "bogus"]) == 2


def test_packed_size_measures_bits_and_what_loading_costs(tiny_dir, tmp_path):
    study = _script("packed_size")
    argv = ["--model", str(tiny_dir), "--cases", "int4_g128", "--out", str(tmp_path), "--baseline-checkout", str(REPO)]
    assert study.main(argv) == 0
    case = json.loads((tmp_path / f"{tiny_dir.name}.json").read_text())["cases"]["int4_g128"]
    assert case["layouts"] == ["int4"] and case["tensor_files_mib"] > 0
    assert set(case["load"]) == {"added_mib", "peak_above_start_mib", "seconds"}
    assert case["load_baseline"]["added_mib"] > 0 and len(case["load_baseline"]["commit"]) == 40
    assert study.main(argv[:4] + ["--out", str(tmp_path), "--baseline-checkout", str(tmp_path)]) == 2


def test_heal_speed_times_steps_and_keeps_other_machines_rows(tiny_dir, data_dir, tmp_path, capsys):
    speed = _script("heal_speed")
    out = tmp_path / "h.json"
    other = {"model": "smollm2-135m", "cpu": "Another CPU", "features": ["amx_bf16"], "threads": 1,
             "dtype": "bfloat16", "steps": 4, "seconds": 52.0, "seconds_per_step": 13.0, "recipe_minutes": 69.3}
    out.write_text(json.dumps({"rows": [other]}))
    argv = ["--model", str(tiny_dir), "--threads", "1", "--dtypes", "float32", "--steps", "2",
            "--data-dir", str(data_dir), "--out", str(out)]
    assert speed.main(argv) == 0
    data = json.loads(out.read_text())
    assert data["recipe_steps"] == 320 and data["heal"]["tokens"] == 2 * 4 * 512
    assert data["rows"][0] == other
    mine = data["rows"][1]
    assert (mine["model"], mine["threads"], mine["dtype"], mine["steps"]) == (str(tiny_dir), 1, "float32", 2)
    assert mine["compile"] is False and 0 < mine["first_step_seconds"] < mine["seconds"]
    # the pace is the second step's: the first holds the setup
    assert mine["seconds_per_step"] == pytest.approx(mine["seconds"] - mine["first_step_seconds"])
    assert mine["seconds_per_step"] > 0 and mine["recipe_minutes"] == pytest.approx(mine["seconds_per_step"] * 320 / 60)
    assert speed.main(argv) == 0  # the same machine and settings: its row is replaced, not added
    assert len(json.loads(out.read_text())["rows"]) == 2
    capsys.readouterr()
    assert speed.main(["--table", "--out", str(out)]) == 0
    assert "| smollm2-135m | Another CPU | amx_bf16 | 1 | bfloat16 | no | - | 13.0 | 69 |" in capsys.readouterr().out
    assert speed.main(["--dtypes", "int8"]) == 2 and speed.main(["--threads", "0"]) == 2


@pytest.mark.parametrize("script", sorted(str(p.relative_to(REPO)) for folder in ("experiments", "kernels")
                                          for p in (REPO / "bench" / folder).glob("*.py")))
def test_every_bench_script_prints_its_help(script):
    # argparse %-formats help strings: a literal "50%" in one (nm_study's --patterns) made --help crash
    folder, name = Path(script).parent.name, Path(script).stem
    module = load_script(name, folder)
    with pytest.raises(SystemExit) as done, contextlib.redirect_stdout(io.StringIO()) as out:
        module.main(["--help"])
    assert done.value.code == 0
    assert "usage:" in out.getvalue()


def test_heal_windows_counts_what_each_draw_holds(tiny_dir, data_dir, tmp_path, capsys):
    """The documents' draw (replayed) holds at most its drawn tokens and only documents longer than a window;
    packed windows hold every drawn token once while a pass lasts."""
    script = _script("heal_windows")
    out = tmp_path / "hw.json"
    assert script.main(["--model", str(tiny_dir), "--tokens", "4096", "--seqlen", "64", "--data-dir", str(data_dir),
                        "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["windows"] == 64 and d["tokens"] == 4096 and d["packed_shape"] == [64, 64]
    assert d["packed_distinct"] == 4096 and 0 < d["documents_distinct"] <= 4096
    assert d["eligible_tokens"] <= d["sample_tokens"] and d["eligible_documents"] <= d["documents"] == 2000
    # the replay draws exactly the windows calibration_windows draws
    from sparsekit.data import c4_documents, calibration_windows
    from sparsekit.models.loader import load_model

    tok = load_model(str(tiny_dir))[1]
    docs = tok(c4_documents("calibration", data_dir), verbose=False)["input_ids"]
    distinct, replayed = script.documents_draw(docs, 64, 64, 1)
    assert distinct == d["documents_distinct"]
    assert calibration_windows(tok, "c4", nsamples=64, seqlen=64, seed=1, data_dir=data_dir).tolist() == replayed
    capsys.readouterr()
    assert script.main(["--table", "--out", str(out)]) == 0
    assert "| packed | 64 |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        script.main(["--tokens", "10", "--seqlen", "64"])
    assert exc.value.code == 2


def test_position_nll_buckets_each_models_windows_and_tabulates(tiny_dir, data_dir, tmp_path, capsys):
    """Each model's bucket means average (by bucket size) to the perplexity the standard harness gives on the
    same windows; a B/A row is B's perplexity over A's per bucket; bad arguments exit 2."""
    import math

    from sparsekit.api import compress, save
    from sparsekit.data import wikitext2_text
    from sparsekit.eval import perplexity
    from sparsekit.models.loader import load_model

    pruned = tmp_path / "pruned"
    save(compress(str(tiny_dir), [{"prune": {"method": "magnitude", "pattern": "2:4"}}], progress=False), pruned)
    script = _script("position_nll")
    out = tmp_path / "pos.json"
    assert script.main(["--models", f"dense={tiny_dir},pruned={pruned}", "--pairs", "pruned/dense", "--buckets",
                        "0,4,16", "--seqlen", "32", "--limit", "3", "--data-dir", str(data_dir), "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert list(d["models"]) == ["dense", "pruned"] and d["reference"] == "dense" and d["buckets"] == [0, 4, 16]
    for label, path in (("dense", tiny_dir), ("pruned", pruned)):
        m = d["models"][label]
        assert sum(v * n for v, n in zip(m["bucket_nll"], (4, 12, 15))) / 31 == pytest.approx(m["nll"], rel=1e-9)
        model, tok = load_model(str(path))
        whole = perplexity(model, tok or load_model(str(tiny_dir))[1], wikitext2_text("test", data_dir), seqlen=32,
                           limit=3, progress=False)
        assert m["ppl"] == pytest.approx(whole.ppl, rel=1e-5)
    assert d["models"]["pruned"]["ppl"] != d["models"]["dense"]["ppl"]
    capsys.readouterr()
    assert script.main(["--table", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    ratios = [math.exp(b - a) for a, b in zip(d["models"]["dense"]["bucket_nll"], d["models"]["pruned"]["bucket_nll"])]
    assert "| positions 0-3 | positions 4-15 | positions 16-30 |" in printed
    assert "| pruned / dense | " in printed and f"x{ratios[2]:.3f} |" in printed
    for bad in (["--models", "dense"], ["--models", f"a={tiny_dir}", "--pairs", "b/a"], ["--buckets", "1,4"],
                ["--buckets", "0,40", "--seqlen", "32"], ["--limit", "0"]):
        with pytest.raises(SystemExit) as exc:
            script.main(bad + ["--out", str(tmp_path / "never.json")])
        assert exc.value.code == 2
    assert not (tmp_path / "never.json").exists()
