"""Every number in the README's results tables, and in the record of docs/cpu-kernels.md that the README's CPU
section summarises, comes from a committed result file (and its command)."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

from tests.bench_scripts import load_script

REPO = Path(__file__).resolve().parents[1]
#: where the results tables live: the README, and the CPU kernels' dated record that its CPU section points to
TABLE_DOCS = ("README.md", "docs/cpu-kernels.md")


def _readme() -> str:
    """The README and the record it points to, as one text (a table may sit in either)."""
    return "\n".join((REPO / name).read_text() for name in TABLE_DOCS)


def _row(readme: str, result_file: str) -> list[str]:
    for line in readme.splitlines():
        if line.startswith("|") and f"`{result_file}`" in line:
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"README has no results row for {result_file}")


def _script(name: str, folder: str = "experiments"):
    return load_script(name, folder)


def _committed_table(name: str, result: str):
    """(script, data): the experiment `name`'s committed JSON `result` names the command that measured it,
    and the README holds the table its `--table` prints, with that command."""
    script = _script(name)
    data = json.loads((REPO / result).read_text())
    assert data["command"].startswith(f"python bench/experiments/{name}.py")
    readme = _readme()
    assert script.table(data) in readme and f"python bench/experiments/{name}.py --table" in readme
    return script, data


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def test_readme_results_equal_result_files():
    readme = _readme()
    checked = 0
    for result_file in re.findall(r"`(bench/results/smollm2-135m_dense[^`]+\.json)`", readme):
        report = json.loads((REPO / result_file).read_text())
        row = _row(readme, result_file)
        assert row[1] == _fmt(report["ppl"]["wikitext2"])
        assert row[2] == (_fmt(report["ppl"]["c4"]) if "c4" in report["ppl"] else "–")
        assert row[3] == f"{report['tokens']['wikitext2']:,}"
        assert report["command"].startswith("sparsekit eval smollm2-135m")
        assert f"--json {result_file}" in readme  # the re-run command is in the README
        checked += 1
    assert checked >= 2


def test_readme_pruning_rows_equal_what_the_table_command_prints():
    """Rows that cite bench/results/prune/*.json are the lines `prune_table.py --table` prints."""
    module = _script("prune_table")
    printed = set(module.table(REPO / "bench" / "results" / "prune").splitlines())
    printed |= set(module.table(REPO / "bench" / "results" / "quant", with_bytes=True).splitlines())
    readme = _readme()
    rows = [line for line in readme.splitlines() if line.startswith("|") and
            ("`bench/results/prune/" in line or "`bench/results/quant/" in line)]
    for line in rows:
        assert line in printed, f"README row differs from the result file: {line}"
    for line in rows:
        report = json.loads((REPO / re.search(r"`(bench/results/(?:prune|quant)/[^`]+)`", line).group(1)).read_text())
        assert report["command"].startswith("python bench/experiments/prune_table.py")


def test_readme_packed_sizes_equal_the_result_file():
    data = json.loads((REPO / "bench" / "results" / "packed_size" / "smollm2-135m.json").read_text())
    readme = _readme()
    assert data["command"].startswith("python bench/experiments/packed_size.py")
    for case, r in data["cases"].items():
        load, before = r["load"], r["load_baseline"]
        row = (f"| {case} | {r['stated_bits_per_weight']} | {r['bits_per_weight']:.3f} | {r['tensor_files_mib']:.0f} | "
               f"{load['added_mib']:.0f} ({load['peak_above_start_mib']:.0f}) | "
               f"{before['added_mib']:.0f} ({before['peak_above_start_mib']:.0f}) |")
        assert row in readme, row
        assert r["within_1_percent"]
        assert before["commit"].startswith("4108f8a") and "4108f8a" in readme


def test_readme_module_study_table_is_what_the_script_prints():
    module = _script("module_sensitivity")
    printed = module.table(REPO / "bench" / "results" / "module_sensitivity" / "smollm2-135m_wanda_limit4.json")
    readme = _readme()
    assert printed in readme


def test_readme_structured_table_is_what_the_script_prints():
    module = _script("structured")
    result = REPO / "bench" / "results" / "structured" / "smollm2-135m_limit40.json"
    data = json.loads(result.read_text())
    assert data["command"].startswith("python bench/experiments/structured.py")
    assert all(r["decode"].get("retimed") for r in data["results"].values()), "run structured.py --retime"
    assert module.table(result) in _readme()


def test_readme_gptq_order_table_is_what_the_script_prints():
    module = _script("gptq_order")
    result = REPO / "bench" / "results" / "gptq_order" / "smollm2-135m_int4_limit4.json"
    data = json.loads(result.read_text())
    results = data["results"]
    # the reason GPTQ defaults to act-order, as the README says
    assert results["gptq act-order"]["ppl"] < results["rtn"]["ppl"] < results["gptq natural order"]["ppl"]
    assert module.table(result) in _readme()


def test_readme_zero_shot_table_is_what_the_script_prints():
    module = _script("zero_shot")
    out = REPO / "bench" / "results" / "zero_shot"
    files = sorted(out.glob("smollm2-135m_*_limit100.json"))
    reports = [json.loads(f.read_text()) for f in files]
    readme = _readme()
    # dense and the three recipes the issue names, plus saved study checkpoints, on one stated protocol, every task
    names = {r["recipe_name"] for r in reports}
    assert set(module.DEFAULT.split(",")) <= names
    for r in reports:
        assert r["command"].startswith("python bench/experiments/zero_shot.py")
        if r["recipe_name"] not in module.DEFAULT.split(","):  # a checkpoint: the README's command scores it again
            assert f"{r['recipe_name']}={r['checkpoint']}" in r["command"] and f"{r['recipe_name']}={r['checkpoint']}" in readme
    assert all(set(r["tasks"]) == set(module.TASKS) for r in reports)
    assert module.table(out, 100) in _readme()


def test_readme_pruning_x_quantization_grid_is_what_the_sweep_prints():
    """The grid is bench/sweeps/prune_vs_quant.yaml; its folder holds every point once, under the grid's
    protocol, and `sparsekit sweep --out DIR --table` prints the README's table."""
    from sparsekit import sweep

    out = REPO / "bench" / "results" / "prune_vs_quant"
    grid = sweep.load_grid(REPO / "bench" / "sweeps" / "prune_vs_quant.yaml")
    rows = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(sweep.point_id(r) for r in sweep.points(grid))  # each once
    assert all(r["protocol"] == sweep.protocol(grid) for r in rows)
    assert json.loads((out / "grid.json").read_text()) == grid  # the grid the README's command runs
    assert (out / "pareto.png").is_file() and (out / "report.html").is_file()
    readme = _readme()
    assert "sparsekit sweep --grid bench/sweeps/prune_vs_quant.yaml --out bench/results/prune_vs_quant\n" in readme
    assert "sparsekit sweep --out bench/results/prune_vs_quant --table" in readme
    assert sweep.markdown_table(out) in readme


def test_readme_cpu_tables_are_what_the_scripts_print():
    """The CPU kernel table (`bench_cpu_gemm.py --table`) and the SmolLM2 decode table (`cpu_decode.py
    --table`) are printed from their committed JSON, which names the command that measured it."""
    readme = _readme()
    gemm = _script("bench_cpu_gemm", "kernels")
    data = json.loads((REPO / "bench" / "results" / "cpu" / "cpu_gemm.json").read_text())
    assert data["command"].startswith("python bench/kernels/bench_cpu_gemm.py")
    assert all(r["rel_err"] is None or r["rel_err"] < 1e-5 for r in data["rows"])  # no WRONG row was timed
    assert gemm.table(data) in readme
    decode = _script("cpu_decode")
    data = json.loads((REPO / "bench" / "results" / "cpu" / "smollm2_decode.json").read_text())
    assert data["command"].startswith("python bench/experiments/cpu_decode.py")
    assert decode.table(data) in readme
    # packed variants from checkpoints
    for name in ("smollm2_decode_zen3.json", "smollm2_decode_zen4.json", "smollm2_decode_zen4_semi24.json",
                 "smollm2_decode_zen4_bf16.json", "smollm2_decode_zen4_a8_tiles.json",
                 "smollm2_decode_zen4_nibble_bf16.json", "smollm2_decode_zen4_kept_bf16.json",
                 "smollm2_decode_zen4_block_scales.json", "smollm2_decode_zen4_batch4.json"):
        data = json.loads((REPO / "bench" / "results" / "cpu" / name).read_text())
        assert all(r["from_checkpoint"] == (r["recipe"] is not None) for r in data["rows"])
        assert decode.table(data) in readme and f"--table --out bench/results/cpu/{name}" in readme
    for name in ("llama32_1b_random_decode.json", "llama32_1b_random_decode_zen4_semi24.json",
                 "llama32_1b_random_decode_zen4_bf16.json", *(f"llama32_1b_random_decode_zen4_pages_{p}.json"
                                                              for p in ("4k", "2m", "4k_1t", "2m_1t"))):
        data = json.loads((REPO / "bench" / "results" / "cpu" / name).read_text())
        assert data["model"] == "llama-3.2-1b-random" and decode.table(data) in readme
        if "_pages_" in name:  # measured with the pages (and threads) its name says, by the README's command
            pages = "1" if "_2m" in name else "0"
            assert data["command"].startswith(f"SPARSEKIT_HUGE_PAGES={pages} ")
            assert ("OMP_NUM_THREADS=1" in data["command"]) == name.endswith("_1t.json")
            assert {r["threads"] for r in data["rows"]} == ({1} if name.endswith("_1t.json") else {2})
            assert f"--out bench/results/cpu/{name}" in readme
    assert "python bench/kernels/bench_cpu_gemm.py --table" in readme
    assert "python bench/experiments/cpu_decode.py --table" in readme

    def other_machine_table(name: str) -> dict:
        """A second kernel table (a forced path or another CPU): no WRONG row timed, printed by its command."""
        data = json.loads((REPO / "bench" / "results" / "cpu" / name).read_text())
        assert all(r["rel_err"] is None or r["rel_err"] < gemm.max_rel_err(r["kernel"]) for r in data["rows"])
        assert gemm.table(data) in readme and f"--table --out bench/results/cpu/{name}" in readme
        return data

    data = other_machine_table("cpu_gemm_avx2.json")
    assert data["path"] == "avx2" and "--path avx2" in data["command"]
    data = other_machine_table("cpu_gemm_zen3.json")
    assert data["path"] == "auto" and "avx512f" not in data["cpu_flags"] and "avx2" in data["cpu_flags"]
    for name in ("cpu_gemm_zen4.json", "cpu_gemm_zen4_int8_a8.json", "cpu_gemm_zen4_semi24.json",
                 "cpu_gemm_zen4_semi24_rows_ahead.json", "cpu_gemm_zen4_semi24_bf16_acts.json",
                 "cpu_gemm_zen4_int4_semi24_tiles.json", "cpu_gemm_zen4_nibble_bf16.json",
                 "cpu_gemm_zen4_int8_rows.json", "cpu_gemm_zen4_int4_semi24_bf16_acts.json",
                 "cpu_gemm_zen4_block_scales.json", "cpu_gemm_zen4_lookup_f32.json"):
        data = other_machine_table(name)
        assert data["path"] == "auto" and "avx512_vnni" in data["cpu_flags"] and data["cpu"].startswith("AMD")


def test_readme_cpu_targets_table_is_what_the_script_prints():
    """The targets table (`cpu_targets.py --table`): both runs of one command in one JSON, every timed kernel
    checked against the reference first, the from-cache run with one weight copy."""
    readme = _readme()
    targets = _script("cpu_targets", "kernels")
    gemm = _script("bench_cpu_gemm", "kernels")
    name = "cpu_targets_zen4.json"
    data = json.loads((REPO / "bench" / "results" / "cpu" / name).read_text())
    assert data["command"].startswith("python bench/kernels/cpu_targets.py")
    assert not data["memory"]["in_cache"] and data["cache"]["in_cache"]
    assert {r["shape"] for r in data["memory"]["rows"]} == {targets.MEMORY_SHAPE}
    assert {r["weight_copies"] for r in data["cache"]["rows"]} == {1}
    for run in (data["memory"], data["cache"]):
        assert all(r["rel_err"] is None or r["rel_err"] < gemm.max_rel_err(r["kernel"]) for r in run["rows"])
    assert targets.table(data) in readme and f"--table --out bench/results/cpu/{name}" in readme
    # the same on 2 MiB pages, and the README's comparison of the two runs
    huge = json.loads((REPO / "bench" / "results" / "cpu" / "cpu_targets_zen4_2m.json").read_text())
    assert data["memory"]["pages"]["asked"] == "4k" and huge["memory"]["pages"]["asked"] == "2m"
    assert huge["memory"]["pages"]["unavailable"] is None and "--pages 2m" in huge["command"]
    assert targets.pages_table(data, huge) in readme
    assert f"--table --out bench/results/cpu/cpu_targets_zen4_2m.json --versus bench/results/cpu/{name}" in readme
    for earlier, pages in (("cpu_targets_zen4_4k_1805.json", "4k"), ("cpu_targets_zen4_2m_1806.json", "2m"),
                           ("cpu_targets_zen4_4k_1859.json", "4k"), ("cpu_targets_zen4_2m_1901.json", "2m")):
        run = json.loads((REPO / "bench" / "results" / "cpu" / earlier).read_text())
        named = f"bench/results/cpu/{earlier}" in readme.replace("\n", " ") or f"`_{pages}_{earlier[-9:-5]}`" in readme
        assert run["memory"]["pages"]["asked"] == pages and named


def test_readme_segments_targets_table_is_what_the_script_prints():
    """The targets run after the 2:4 bf16 kernel took one token in segments: its table is the script's, and the
    figures the paragraph reads from it (the semi24 row, the read) are that run's."""
    readme = _readme()
    targets = _script("cpu_targets", "kernels")
    name = "cpu_targets_zen4_segments.json"
    data = json.loads((REPO / "bench" / "results" / "cpu" / name).read_text())
    assert targets.table(data) in readme and f"--table --out bench/results/cpu/{name}" in readme
    semi24 = next(r for r in data["memory"]["rows"] if r["kernel"] == "semi24" and r["threads"] == 1)
    assert f"{semi24['ms']:.3f} ms, **{100 * semi24['read_bw_fraction']:.0f}% of that run's read**" in readme


def test_readme_zen3_gather_targets_table_is_what_the_script_prints():
    """The AVX2 one-token gather on Zen 3: the targets table is the script's on this build's JSON, the figures the
    bullet reads from it and from the run before the change are those runs', and both ran the AVX2 path."""
    readme = _readme()
    targets = _script("cpu_targets", "kernels")
    runs = {}
    for name in ("cpu_targets_zen3.json", "cpu_targets_zen3_7a809f2.json"):
        data = json.loads((REPO / "bench" / "results" / "cpu" / name).read_text())
        assert data["memory"]["avx2_path"] and not data["memory"]["avx512_path"] and f"bench/results/cpu/{name}" in readme
        runs[name] = {(r["kernel"], r["threads"]): r for r in data["memory"]["rows"] if r["m"] == 1}
    data = json.loads((REPO / "bench" / "results" / "cpu" / "cpu_targets_zen3.json").read_text())
    assert targets.table(data) in readme and "--table --out bench/results/cpu/cpu_targets_zen3.json" in readme
    before = runs["cpu_targets_zen3_7a809f2.json"]
    flat = " ".join(readme.split())
    assert (f"{100 * before['semi24', 1]['read_bw_fraction']:.0f}% and {100 * before['semi24', 2]['read_bw_fraction']:.0f}%, "
            f"{before['semi24', 1]['ms']:.3f} and {before['semi24', 2]['ms']:.3f} ms") in flat
    # end to end, this build against the commit before: the tables are the script's, the speeds quoted theirs
    decode = _script("cpu_decode")
    speeds = {}
    for model, stem in (("smollm2-135m", "smollm2"), ("llama-3.2-1b-random", "llama32_1b_random")):
        for build in ("gather", "7a809f2"):
            data = json.loads((REPO / "bench" / "results" / "cpu" / f"{stem}_decode_zen3_{build}.json").read_text())
            assert data["model"] == model and decode.table(data) in readme
            assert {r["threads"] for r in data["rows"]} == {2}
            speeds[stem, build] = {r["variant"]: r for r in data["rows"]}
    # 2 MiB pages against the 4 KiB run after it
    huge, small = (json.loads((REPO / "bench" / "results" / "cpu" / f"cpu_targets_zen3_{p}.json").read_text())
                   for p in ("2m", "4k_1210"))
    assert huge["memory"]["pages"]["asked"] == "2m" and small["memory"]["pages"]["asked"] == "4k"
    assert targets.pages_table(small, huge) in readme
    assert ("--table --out bench/results/cpu/cpu_targets_zen3_2m.json --versus "
            "bench/results/cpu/cpu_targets_zen3_4k_1210.json") in readme
    # the A/B changes quoted (10th percentiles: 2:4 from memory at 1 and 2 threads, in cache; int4 + 2:4)
    for name in ("semi24_gather_memory_1t", "semi24_gather_memory_2t", "semi24_gather_cache_1t",
                 "int4_semi24_gather_memory_1t", "int4_semi24_gather_cache_1t"):
        ab = json.loads((REPO / "bench" / "results" / "cpu" / f"ab_zen3_{name}.json").read_text())
        assert ab["command"].startswith("python bench/kernels/ab_builds.py") and ab["m"] == 1 and ab["acts"] == "float"
        assert f"{100 * ab['change']['p10_ms']:.1f}%" in flat, name
    new, old = speeds["smollm2", "gather"]["2:4"], speeds["smollm2", "7a809f2"]["2:4"]
    assert (f"**{new['tokens_per_s']:.1f} tokens/s eager, {new['compiled']['tokens_per_s']:.1f} compiled**, against "
            f"{old['tokens_per_s']:.1f} and {old['compiled']['tokens_per_s']:.1f}") in flat


ZEN3_AB_SHAPES = {"cache_1t": "1024 x 14336 (in cache)", "mem_1t": "4096 x 14336 (memory)",
                  "mem_2t": "4096 x 14336 (memory)", "smollm2_up_1t": "1536 x 576 (SmolLM2 up)",
                  "smollm2_down_1t": "576 x 1536 (SmolLM2 down)"}


def _assert_zen3_ab_rows(readme: str, files: str, layout: str, label: str, base: str, acts: str = "float",
                         names: tuple[str, ...] = tuple(ZEN3_AB_SHAPES)) -> None:
    """The rows of a Zen 3 A/B table (one token, 8 rounds, the shapes of ZEN3_AB_SHAPES, or those of `names`;
    `files`: the JSON names with {} for the shape's key; `acts`: ab_builds.py's --acts) are the committed runs' 10th
    percentiles against commit `base`."""
    cpu = REPO / "bench" / "results" / "cpu"
    for name in names:
        shape = ZEN3_AB_SHAPES[name]
        ab = json.loads((cpu / files.format(name)).read_text())
        assert ab["command"].startswith("python bench/kernels/ab_builds.py") and ab["builds"]["base"]["commit"] == base
        assert files.format(name) in ab["command"]
        assert (ab["layout"], ab["acts"], ab["rounds"], f"{ab['n']} x {ab['k']}") == (layout, acts, 8, shape.split(" (")[0])
        assert ab["threads"] == (2 if name == "mem_2t" else 1) and ab["m"] == 1
        b, n = ab["builds"]["base"]["p10_ms"], ab["builds"]["new"]["p10_ms"]
        assert (f"| {label} | {shape}, 1, {ab['threads']} | {b:.3f} ms | {n:.3f} ms | "
                f"{100 * ab['change']['p10_ms']:+.1f}% |") in readme, (layout, name)


def test_readme_zen3_exact_int4_group_loops_are_what_the_runs_print():
    """The section on the exact int4 kernels' group loops at one token (Zen 3): the A/B rows are the committed runs'
    10th percentiles against 2f47c91, the targets table is the script's on its JSON (the AVX2 path) with the
    ratios quoted from it, and the decode tables and tokens/s are the four committed decode runs'."""
    readme = _readme()
    flat = " ".join(readme.split())
    cpu = REPO / "bench" / "results" / "cpu"
    for layout, label in (("int4", "int4 g128"), ("int4_semi24", "int4 + 2:4 g128")):
        _assert_zen3_ab_rows(readme, f"ab_zen3_{layout}_exact_groups_{{}}.json", layout, f"{label}, fp32 activations",
                             "2f47c91")
    targets = _script("cpu_targets", "kernels")
    data = json.loads((cpu / "cpu_targets_zen3_groups.json").read_text())
    assert data["memory"]["avx2_path"] and not data["memory"]["avx512_path"]
    assert targets.table(data) in readme and "--table --out bench/results/cpu/cpu_targets_zen3_groups.json" in readme
    rows = {(r["kernel"], r["threads"]): r["ms"] for r in data["memory"]["rows"] if r["m"] == 1}
    assert (f"Exact int4 **{rows['fp32', 1] / rows['int4', 1]:.2f}x** fp32 dense at one thread (2.99x at 13:58) and "
            f"**{rows['fp32', 2] / rows['int4', 2]:.2f}x** at two") in flat
    assert (f"int4 + 2:4 exact {rows['int4', 1] / rows['int4_semi24', 1]:.2f}x / "
            f"{rows['int4', 2] / rows['int4_semi24', 2]:.2f}x int4") in flat
    assert f"2:4 bf16 {rows['fp32', 1] / rows['semi24', 1]:.2f}x fp32 at one thread" in flat
    assert f"the 2:4 bf16 kernel, unchanged, took {rows['semi24', 1]:.3f} ms against 4.213" in flat
    decode = _script("cpu_decode")
    speeds = {}
    for build in ("groups", "2f47c91", "groups_repeat", "2f47c91_repeat"):
        run = json.loads((cpu / f"smollm2_decode_zen3_{build}.json").read_text())
        assert run["model"] == "smollm2-135m" and decode.table(run) in readme
        assert {r["threads"] for r in run["rows"]} == {2}
        speeds[build] = {r["variant"]: f"{r['tokens_per_s']:.1f} / {r['compiled']['tokens_per_s']:.1f}" for r in run["rows"]}
    for variant, label in (("int4 g128", "int4"), ("2:4 + int4", "2:4 + int4")):
        s = {b: v[variant] for b, v in speeds.items()}
        assert (f"{label} {s['groups']} against {s['2f47c91']}, again {s['groups_repeat']} against "
                f"{s['2f47c91_repeat']}") in flat, variant


def test_readme_zen3_semi24_two_rows_are_what_the_runs_print():
    """The section on 2:4 with bf16 values two rows at a time (Zen 3): the A/B rows are the committed runs' 10th
    percentiles against 3d2a505, the targets table is the script's on the repeat run's JSON (the AVX2 path), and the
    ratios and read fractions quoted are the two runs'."""
    readme = _readme()
    flat = " ".join(readme.split())
    cpu = REPO / "bench" / "results" / "cpu"
    _assert_zen3_ab_rows(readme, "ab_zen3_semi24_rows2_{}.json", "semi24", "2:4, bf16 values, fp32 activations", "3d2a505")
    targets = _script("cpu_targets", "kernels")
    runs = [json.loads((cpu / f"cpu_targets_zen3_rows2{s}.json").read_text()) for s in ("", "_repeat")]
    assert all(r["memory"]["avx2_path"] and not r["memory"]["avx512_path"] for r in runs)
    assert targets.table(runs[1]) in readme and "--table --out bench/results/cpu/cpu_targets_zen3_rows2_repeat.json" in readme
    ms = [{(r["kernel"], r["threads"]): r["ms"] for r in run["memory"]["rows"] if r["m"] == 1} for run in runs]
    one = " / ".join(f"**{m['fp32', 1] / m['semi24', 1]:.2f}x**" for m in ms)
    two = " / ".join(f"{m['fp32', 2] / m['semi24', 2]:.2f}x" for m in ms)
    assert f"2:4 with bf16 values at one thread {one} fp32 dense" in flat and f"at two threads {two}." in flat
    assert f"int4 + 2:4 a8 at one thread {ms[0]['int4_semi24_a8', 1]:.3f} ms against {ms[1]['int4_semi24_a8', 1]:.3f}" in flat
    for run, m, (read, ceiling) in zip(runs, ms, (("82%", "88%"), ("77%", "105%"))):
        line = next(x for x in targets.table(run).splitlines() if x.startswith("| semi24 | 2:4, bf16 values |"))
        cells = [c.strip() for c in line.split("|")[3:5]]
        assert cells[0] == f"{m['semi24', 1]:.3f} ms, {read}" and cells[1].endswith(f", {ceiling}"), line
    assert "**82% / 77%** of the read" in flat and "measured 88% / 105% of the read" in flat


def test_readme_zen3_int4_semi24_a8_gather_is_what_the_runs_print():
    """The section on int4 + 2:4 a8's gather at one token (Zen 3): the A/B rows against 0c15bcc and against int4 a8
    are the committed runs' 10th percentiles, the targets and decode tables are the scripts' on their JSON (the AVX2
    path), and the cycles and ratios quoted are those runs' and the committed loop-body timings'."""
    readme = _readme()
    flat = " ".join(readme.split())
    cpu = REPO / "bench" / "results" / "cpu"
    _assert_zen3_ab_rows(readme, "ab_zen3_int4_semi24_a8_gather_{}.json", "int4_semi24",
                         "int4 + 2:4 g128, int8 activations", "0c15bcc", acts="int8")
    cache = json.loads((cpu / "ab_zen3_int4_semi24_a8_gather_cache_1t.json").read_text())["builds"]["new"]["p10_ms"]
    assert f"the kernel, at {cache:.3f} ms on 1024 x 14336 in cache (below), takes {cache * 3.1e6 / (1024 * 14336 / 64):.1f}." in flat
    for t in (1, 2):
        ab = json.loads((cpu / f"ab_zen3_int4_semi24_vs_int4_a8_{t}t.json").read_text())
        base, new = ab["builds"]["base"], ab["builds"]["new"]
        assert (base["layout"], new["layout"], ab["acts"], ab["threads"], ab["m"]) == ("int4", "int4_semi24", "int8", t, 1)
        assert base["tree"] == new["tree"] and f"ab_zen3_int4_semi24_vs_int4_a8_{t}t.json" in ab["command"]
        assert (f"| {t} | {base['p10_ms']:.3f} ms | {new['p10_ms']:.3f} ms | x{base['p10_ms'] / new['p10_ms']:.2f} "
                f"(medians x{base['ms'] / new['ms']:.2f}) |") in readme
    out = (cpu / "vector_throughput_avx2_zen3_a8_gather.txt").read_text()
    cycles = {label: min(float(c) for c in re.findall(rf"^{re.escape(label)}\s+([\d.]+) cycles", out, re.M))
              for label in ("int4 + 2:4 a8 gather, 64 inputs", "int4 a8 g128, 64 weights")}
    assert out.count("UTC 2026") == 3
    gather, int4 = cycles["int4 + 2:4 a8 gather, 64 inputs"], cycles["int4 a8 g128, 64 weights"]
    assert f"the loop body alone issues at {gather:.2f} cycles per 64 inputs" in flat
    assert f"({gather:.2f} cycles in the loop-body line, against {int4:.2f} for int4 a8's 10)" in flat
    assert f"are {(gather / 24) / (int4 / 32):.1f}x int4 a8's per packed byte" in flat
    targets = _script("cpu_targets", "kernels")
    runs = [json.loads((cpu / f"cpu_targets_zen3_a8_gather{s}.json").read_text()) for s in ("", "_repeat")]
    assert all(r["memory"]["avx2_path"] and not r["memory"]["avx512_path"] for r in runs)
    assert targets.table(runs[0]) in readme and "--table --out bench/results/cpu/cpu_targets_zen3_a8_gather.json" in readme
    ms = [{(r["kernel"], r["threads"]): r["ms"] for r in run["memory"]["rows"] if r["m"] == 1} for run in runs]
    assert (f"int4 + 2:4 a8 against int4 a8 **{ms[0]['int4_a8', 1] / ms[0]['int4_semi24_a8', 1]:.2f}x** at one thread "
            f"and {ms[0]['int4_a8', 2] / ms[0]['int4_semi24_a8', 2]:.2f}x at two ({ms[1]['int4_a8', 1] / ms[1]['int4_semi24_a8', 1]:.2f}x / "
            f"{ms[1]['int4_a8', 2] / ms[1]['int4_semi24_a8', 2]:.2f}x in the repeat") in flat
    decode = _script("cpu_decode")
    run = json.loads((cpu / "smollm2_decode_zen3_a8_gather.json").read_text())
    assert run["model"] == "smollm2-135m" and decode.table(run) in readme and {r["threads"] for r in run["rows"]} == {2}
    rows = {r["variant"]: r for r in run["rows"]}

    def x(variant: str, compiled: bool = True) -> str:
        speed = (lambda r: r["compiled"]["tokens_per_s"]) if compiled else (lambda r: r["tokens_per_s"])
        return f"{speed(rows[variant]) / speed(rows['dense fp32']):.2f}x"

    assert f"int4 + 2:4 a8 **{x('2:4 + int4 a8')}** dense fp32 ({x('2:4 + int4 a8', False)} eager)" in flat
    assert f"the exact int4 + 2:4 {x('2:4 + int4')} and int4 {x('int4 g128')} in the same run" in flat


#: the README's Zen 3 summary: six runs of today's build (the int8 and MXFP4 a8 kernels with the sign moved onto q)
ZEN3_TARGET_RUNS = tuple(f"cpu_targets_zen3_a8_sign_run{i}" for i in range(1, 7))
#: the six runs of the build before, in docs/cpu-kernels.md
ZEN3_TARGET_RUNS_BEFORE = ("cpu_targets_zen3_a8_gather", "cpu_targets_zen3_a8_gather_repeat", "cpu_targets_zen3_1207",
                           "cpu_targets_zen3_1207_repeat", "cpu_targets_zen3_1207_0825",
                           "cpu_targets_zen3_1207_0825_repeat")


@pytest.mark.parametrize("names, doc", [(ZEN3_TARGET_RUNS, "README.md"), (ZEN3_TARGET_RUNS_BEFORE, "docs/cpu-kernels.md")])
def test_readme_zen3_targets_across_runs_are_what_the_script_prints(names, doc):
    """The Zen 3 summary: each target over six runs of the same decode kernels (the README: today's build; the
    record: the build before), and the read bandwidths its text quotes."""
    targets = _script("cpu_targets", "kernels")
    runs = [json.loads((REPO / f"bench/results/cpu/{name}.json").read_text()) for name in names]
    text = (REPO / doc).read_text()
    assert targets.across_table(runs) in text
    assert ("python bench/kernels/cpu_targets.py --across "
            + " ".join(f"bench/results/cpu/{name}.json" for name in names)) in text
    for name, run in zip(names, runs):
        assert run["command"] == f"python bench/kernels/cpu_targets.py --out bench/results/cpu/{name}.json"
        assert run["memory"]["avx2_path"] and not run["memory"]["avx512_path"]
    reads = [run["memory"]["bandwidth"]["1"]["read_gbps"] for run in runs]
    flat = " ".join(text.split())
    assert f"its one-thread read moved from {max(reads):.1f} to {min(reads):.1f} GB/s" in flat


def test_readme_zen3_summary_decode_is_what_the_runs_print():
    """The README's own Zen 3 decode tables (the whole run, then its dense rows again) and the ratios its
    bullets quote against each dense run."""
    decode = _script("cpu_decode")
    readme = (REPO / "README.md").read_text()
    flat = " ".join(readme.split())
    names = ("smollm2_decode_zen3_1207", "smollm2_decode_zen3_1207_dense_after")
    runs = [json.loads((REPO / f"bench/results/cpu/{name}.json").read_text()) for name in names]
    for name, run in zip(names, runs):
        assert run["model"] == "smollm2-135m" and {r["threads"] for r in run["rows"]} == {2}
        assert decode.table(run) in readme and f"--table --out bench/results/cpu/{name}.json" in readme
    rows = {r["variant"]: r for r in runs[0]["rows"]}
    dense = [rows["dense fp32"], next(r for r in runs[1]["rows"] if r["variant"] == "dense fp32")]

    def compiled(row: dict) -> float:
        return row["compiled"]["tokens_per_s"]

    assert (f"dense fp32 compiled {compiled(dense[1]):.1f} tokens/s against the first row's "
            f"{compiled(dense[0]):.1f}") in flat
    for variant, label in (("int4 g128", "int4"), ("2:4 + int4", "int4 + 2:4"), ("int4 g128 a8", "int4 a8"),
                           ("2:4 + int4 a8", "int4 + 2:4 a8")):
        x = [compiled(rows[variant]) / compiled(d) for d in dense]
        assert f"{label} {x[0]:.2f}x / {x[1]:.2f}x" in flat, variant
    eager = [rows[v]["tokens_per_s"] / dense[0]["tokens_per_s"] for v in ("int4 g128", "2:4 + int4")]
    assert f"{eager[0]:.2f}x and {eager[1]:.2f}x" in flat


def _assert_a8_ab_row(docs: str, path: Path, base: str, rounds: int, swapped: bool = False) -> None:
    """An `ab_builds.py --acts int8` run against commit `base` is its row of docs/cpu-kernels.md: 10th percentiles,
    the change of both and of the medians. `swapped`: a run with the builds' places swapped (`--base . --new
    ../base`): `base` is its new build, its row says ", places swapped" and the change is taken the other way."""
    ab = json.loads(path.read_text())
    before, after = ab["builds"]["base"], ab["builds"]["new"]
    if swapped:
        before, after = after, before
        assert "--base . --new ../base" in ab["command"]
    assert before["commit"] == base and ab["acts"] == "int8" and path.name in ab["command"] and ab["rounds"] == rounds
    label = {"int8": "int8, int8 activations", "mxfp4": "MXFP4, int8 activations"}[ab["layout"]]
    where = "in cache" if ab["copies"] == 1 else "memory"
    p10, med = (after["p10_ms"] / before["p10_ms"] - 1, after["ms"] / before["ms"] - 1)
    assert (f"| {label} | {ab['n']} x {ab['k']} ({where}), {ab['m']}, {ab['threads']}{', places swapped' if swapped else ''}"
            f" | {before['p10_ms']:.3f} ms | {after['p10_ms']:.3f} ms | {100 * p10:+.1f}% ({100 * med:+.1f}%) |") in docs, path.name


#: the loop-body lines of vector_throughput_avx2.cpp quoted by the section on the sign moved onto q
A8_SIGN_LINES = ("int8 a8, 32 weights", "mxfp4 a8 biased (1a8eba5), 64 weights", "mxfp4 a8 sign, 64 weights",
                 "int4 a8 g128, 64 weights")


def test_readme_zen3_a8_sign_is_what_the_runs_print():
    """The section on the int8 and MXFP4 a8 kernels with the weights' sign moved onto q (Zen 3): each A/B row is a
    committed run's 10th percentiles (and medians' change) against 1a8eba5, each loop-body line the lowest cycles and
    highest GB/s of the three committed runs of vector_throughput_avx2.cpp, and the decode table (in the README and
    the record) the committed run's."""
    docs = (REPO / "docs" / "cpu-kernels.md").read_text()
    cpu = REPO / "bench" / "results" / "cpu"
    files = sorted(cpu.glob("ab_zen3_int8_a8_*.json")) + sorted(cpu.glob("ab_zen3_mxfp4_a8_*.json"))
    assert len(files) == 14
    for path in files:
        _assert_a8_ab_row(docs, path, "1a8eba5", 16 if path.stem.endswith("_repeat") else 10)
    out = (cpu / "vector_throughput_avx2_zen3_a8_sign.txt").read_text()
    source = (REPO / "bench" / "kernels" / "cpu" / "vector_throughput_avx2.cpp").read_text()
    assert out.count("UTC 2026") == 3
    for label in A8_SIGN_LINES:
        found = re.findall(rf"^{re.escape(label)}\s+([\d.]+) cycles a step:\s+([\d.]+) GB/s", out, re.M)
        assert len(found) == 3 and f'BENCH("{label}"' in source, label
        cyc, gbps = min(float(c) for c, _ in found), max(float(g) for _, g in found)
        assert f"| {label} | {cyc:.2f} | {gbps:.1f} |" in docs, label
    for pair in (1, 2):  # exact MXFP4 and MXFP4 a8 decoded by the build before and this one in turn
        for build, commit in (("base", "1a8eba5"), ("new", "1311d96")):
            run = json.loads((cpu / f"smollm2_decode_zen3_mxfp4_a8_pair{pair}_{build}.json").read_text())
            tps = {r["variant"]: r["compiled"]["tokens_per_s"] for r in run["rows"]}
            assert f"--variants 'mxfp4,mxfp4 a8' --out /work/scratch/s46/decode_{build}_{pair}.json" in run["command"]
            assert (f"| {pair} | {commit} | {tps['mxfp4']:.1f} | {tps['mxfp4 a8']:.1f} | "
                    f"x{tps['mxfp4 a8'] / tps['mxfp4']:.2f} |") in docs
    decode = _script("cpu_decode")
    run = json.loads((cpu / "smollm2_decode_zen3_a8_sign.json").read_text())
    assert run["model"] == "smollm2-135m" and {r["threads"] for r in run["rows"]} == {2}
    readme = (REPO / "README.md").read_text()
    assert decode.table(run) in readme and "--table --out bench/results/cpu/smollm2_decode_zen3_a8_sign.json" in readme


def test_readme_zen3_int8_a8_block_index_is_what_the_runs_print():
    """The record of int8 a8's activation block stepped with k0 (Zen 3, tried and reverted): each A/B row a
    committed run's against f568486, and the run with the builds' places swapped, its change taken the other way."""
    docs = (REPO / "docs" / "cpu-kernels.md").read_text()
    files = sorted((REPO / "bench" / "results" / "cpu").glob("ab_zen3_int8_blk_*.json"))
    assert len(files) == 8
    for path in files:
        rounds = 16 if path.stem.endswith(("_repeat", "_swapped")) else 10
        _assert_a8_ab_row(docs, path, "f568486", rounds, swapped=path.stem.endswith("_swapped"))


def test_readme_zen3_int8_four_rows_are_what_the_runs_print():
    """The section on exact int8 four rows at a time at one token (Zen 3): the A/B rows are the committed runs' 10th
    percentiles against d4214d4 and, for the Llama shapes, against two rows at a time (c673640); the GB/s quoted are
    the memory and cache runs' weight bytes over their 10th percentiles; the targets table is the script's on the
    repeat run's JSON (the AVX2 path)."""
    readme = _readme()
    flat = " ".join(readme.split())
    cpu = REPO / "bench" / "results" / "cpu"
    _assert_zen3_ab_rows(readme, "ab_zen3_int8_rows4_{}.json", "int8", "int8, fp32 activations", "d4214d4")
    _assert_zen3_ab_rows(readme, "ab_zen3_int8_rows4_vs_rows2_{}.json", "int8", "int8, fp32 activations", "c673640",
                         names=("cache_1t", "mem_1t", "mem_2t"))
    assert all("--base ../r2" in json.loads((cpu / f"ab_zen3_int8_rows4_vs_rows2_{n}.json").read_text())["command"]
               for n in ("cache_1t", "mem_1t", "mem_2t"))
    gbs = {}
    for name in ("mem_1t", "cache_1t"):
        ab = json.loads((cpu / f"ab_zen3_int8_rows4_{name}.json").read_text())
        gbs[name] = [f"{ab['weight_bytes'] / ab['builds'][b]['p10_ms'] / 1e6:.1f}" for b in ("new", "base")]
    assert (f"streams {gbs['mem_1t'][0]} GB/s of weights against {gbs['mem_1t'][1]} before, and in cache "
            f"{gbs['cache_1t'][0]} against {gbs['cache_1t'][1]};") in flat
    targets = _script("cpu_targets", "kernels")
    runs = [json.loads((cpu / f"cpu_targets_zen3_int8_rows4{s}.json").read_text()) for s in ("", "_repeat")]
    assert all(r["memory"]["avx2_path"] and not r["memory"]["avx512_path"] for r in runs)
    assert targets.table(runs[1]) in readme
    assert "--table --out bench/results/cpu/cpu_targets_zen3_int8_rows4_repeat.json" in readme
    cells = []  # per run: the int8 row's 1t from memory, 1t ceiling, 2t from memory: their percentages
    for run in runs:
        line = next(x for x in targets.table(run).splitlines() if x.startswith("| int8 | int8 per channel |"))
        cells.append([c.strip().rsplit(", ", 1)[1] for c in line.split("|")[3:6]])
    mem = [json.loads((cpu / f"ab_zen3_int8_rows4_{n}.json").read_text())["change"]["p10_ms"] for n in ("mem_1t", "mem_2t")]
    readme_flat = " ".join((REPO / "README.md").read_text().split())
    assert (f"{100 * mem[0]:.0f}% / {100 * mem[1]:.0f}% from memory at one / two threads against the build before, and "
            f"**{cells[0][0]} / {cells[1][0]}** of the read at one thread in two runs") in readme_flat
    assert f"(median 62% above, ceiling {cells[0][1]} / {cells[1][1]})" in readme_flat
    assert (f"**{cells[0][0]} / {cells[1][0]}** of the read in the two runs" in flat
            and f"its ceiling {cells[0][1]} / {cells[1][1]} (86%); at two threads {cells[0][2]} / {cells[1][2]}." in flat)


def test_readme_zen3_int4_semi24_a8_tiles_are_what_the_runs_print():
    """The section on int4 + 2:4 a8 in tiles of 8 rows (Zen 3): the A/B rows against 73e152c (one token on the five
    shapes, and 4 / 16 tokens) and against int4 a8 are the committed runs' 10th percentiles, the cycles quoted are the
    committed loop-body timings' and the cache run's, the targets table is the script's on the first run's JSON (the
    AVX2 path), and the ratios and read fractions the README quotes are the two runs'."""
    readme = _readme()
    flat = " ".join(readme.split())
    readme_flat = " ".join((REPO / "README.md").read_text().split())
    cpu = REPO / "bench" / "results" / "cpu"
    label = "int4 + 2:4 g128, int8 activations"
    _assert_zen3_ab_rows(readme, "ab_zen3_int4_semi24_a8_tiles_{}.json", "int4_semi24", label, "73e152c", acts="int8")
    change = {}
    for name, m, rounds in (("m4_1t", 4, 8), ("m16_1t", 16, 4), ("mem_1t", 1, 8), ("mem_2t", 1, 8)):
        ab = json.loads((cpu / f"ab_zen3_int4_semi24_a8_tiles_{name}.json").read_text())
        assert (ab["m"], ab["rounds"], ab["acts"], ab["builds"]["base"]["commit"]) == (m, rounds, "int8", "73e152c")
        b, n, change[name] = ab["builds"]["base"]["p10_ms"], ab["builds"]["new"]["p10_ms"], ab["change"]["p10_ms"]
        assert f"| {label} | 4096 x 14336 (memory), {m}, {ab['threads']} | {b:.3f} ms | {n:.3f} ms | {100 * change[name]:+.1f}% |" in readme
    assert (f"Against the build before: {100 * change['mem_1t']:.0f}% / {100 * change['mem_2t']:.0f}% from memory at one / two "
            f"threads, {100 * change['m4_1t']:.0f}% / {100 * change['m16_1t']:.0f}% at 4 / 16 tokens") in readme_flat
    for t in (1, 2):
        ab = json.loads((cpu / f"ab_zen3_int4_semi24_a8_tiles_vs_int4_a8_mem_{t}t.json").read_text())
        base, new = ab["builds"]["base"], ab["builds"]["new"]
        assert (base["layout"], new["layout"], ab["acts"], ab["threads"], ab["m"]) == ("int4", "int4_semi24", "int8", t, 1)
        assert "--base-layout int4" in ab["command"] and f"ab_zen3_int4_semi24_a8_tiles_vs_int4_a8_mem_{t}t.json" in ab["command"]
        assert (f"| {t} | {base['p10_ms']:.3f} ms | {new['p10_ms']:.3f} ms | x{base['p10_ms'] / new['p10_ms']:.2f} "
                f"(medians x{base['ms'] / new['ms']:.2f}) |") in readme
    out = (cpu / "vector_throughput_avx2_zen3_a8_tiles.txt").read_text()
    assert out.count("UTC 2026") == 3
    cycles = {label: min(float(c) for c in re.findall(rf"^{re.escape(label)}\s+([\d.]+) cycles", out, re.M))
              for label in ("int4 + 2:4 a8 tiles, 64 inputs", "int4 + 2:4 a8 gather, 64 inputs", "int4 a8 g128, 64 weights")}
    tiles, gather, int4 = (cycles[k] for k in cycles)
    assert (f"issues at {tiles:.2f} cycles ({24 * 3.1 / tiles:.1f} GB/s of packed bytes at 3.1 GHz) against {gather:.2f} "
            f"for the gather (lowest of three runs each; int4 a8 g128: {int4:.2f})") in flat
    assert f"per 64 inputs {tiles:.2f} cycles against {gather:.2f} for the row-at-a-time gather" in readme_flat
    cache = {b: json.loads((cpu / "ab_zen3_int4_semi24_a8_tiles_cache_1t.json").read_text())["builds"][b]["p10_ms"]
             for b in ("new", "base")}
    per64 = {b: ms * 3.1e6 / (1024 * 14336 / 64) for b, ms in cache.items()}
    assert (f"the whole kernel in cache takes {per64['new']:.2f} cycles per 64 inputs of a row at one thread ({cache['new']:.3f} ms "
            f"on 1024 x 14336, below) against {per64['base']:.2f} for the gather") in flat
    targets = _script("cpu_targets", "kernels")
    runs = [json.loads((cpu / f"cpu_targets_zen3_a8_tiles{s}.json").read_text()) for s in ("", "_repeat")]
    assert all(r["memory"]["avx2_path"] and not r["memory"]["avx512_path"] for r in runs)
    assert targets.table(runs[0]) in readme and "--table --out bench/results/cpu/cpu_targets_zen3_a8_tiles.json" in readme
    ms = [{(r["kernel"], r["threads"]): r["ms"] for r in run["memory"]["rows"] if r["m"] == 1} for run in runs]
    ratio = [[m["int4_a8", t] / m["int4_semi24_a8", t] for m in ms] for t in (1, 2)]
    assert all(r >= 1.25 for rs in ratio for r in rs)  # what the section says: met in both runs at both thread counts
    assert (f"int4 + 2:4 a8 against int4 a8 x{ratio[0][0]:.2f} / x{ratio[0][1]:.2f} at one thread and x{ratio[1][0]:.2f} / "
            f"x{ratio[1][1]:.2f} at two") in flat
    assert (f"int4 + 2:4 a8 **{ratio[0][0]:.2f}x / {ratio[0][1]:.2f}x** and {ratio[1][0]:.2f}x / {ratio[1][1]:.2f}x int4 a8 "
            "at one and at two threads") in readme_flat
    cells = []
    for run in runs:
        line = next(x for x in targets.table(run).splitlines() if x.startswith("| int4_semi24_a8 |"))
        cells.append([c.strip().rsplit(", ", 1)[1] for c in line.split("|")[3:6]])
    assert (f"streams **{cells[0][0]} / {cells[1][0]}** of the read (ceiling {cells[0][1]} / {cells[1][1]}; at two threads "
            f"{cells[0][2]} / {cells[1][2]})") in flat
    assert f"streaming {cells[0][0]} / {cells[1][0]} of the read at one thread" in readme_flat
    int4x = " / ".join(f"x{m['fp32', 1] / m['int4_a8', 1]:.2f}" for m in ms)
    assert f"int4 a8 was 5x fp32 dense at one thread ({int4x})" in flat
    decode = _script("cpu_decode")
    run = json.loads((cpu / "smollm2_decode_zen3_a8_tiles.json").read_text())
    assert run["model"] == "smollm2-135m" and decode.table(run) in readme and {r["threads"] for r in run["rows"]} == {2}
    assert "--table --out bench/results/cpu/smollm2_decode_zen3_a8_tiles.json" in readme
    rows = {r["variant"]: r for r in run["rows"]}  # the first dense row: the later one of the same name is the last
    rows["dense fp32"] = run["rows"][0]
    speed = {v: (r["compiled"]["tokens_per_s"], r["tokens_per_s"]) for v, r in rows.items()}
    x = {v: [s / d for s, d in zip(speed[v], speed["dense fp32"])] for v in ("int4 g128 a8", "2:4 + int4 a8")}
    assert (f"int4 + 2:4 a8 **{x['2:4 + int4 a8'][0]:.2f}x** dense fp32 compiled against int4 a8's {x['int4 g128 a8'][0]:.2f}x "
            f"({speed['2:4 + int4 a8'][0] / speed['int4 g128 a8'][0]:.2f}x int4 a8)") in flat
    assert f"Eager, {x['2:4 + int4 a8'][1]:.2f}x against {x['int4 g128 a8'][1]:.2f}x" in flat
    llama = json.loads((cpu / "llama32_1b_random_decode_zen3_a8_tiles.json").read_text())
    assert llama["model"] == "llama-3.2-1b-random" and decode.table(llama) in readme
    lr = {r["variant"]: (r["compiled"]["tokens_per_s"], r["tokens_per_s"]) for r in llama["rows"]}
    (c24, e24), (c4, e4) = lr["2:4 + int4 a8"], lr["int4 g128 a8"]
    assert (f"int4 + 2:4 a8 **{c24:.1f} against {c4:.1f}** tokens/s compiled against int4 a8 ({c24 / c4:.2f}x), "
            f"{e24:.1f} against {e4:.1f} eager ({e24 / e4:.2f}x)") in flat


@pytest.mark.parametrize("name, doc", [("cpu_gemm_zen3_a8_sign", "README.md"), ("cpu_gemm_zen3_1207", "docs/cpu-kernels.md")])
def test_readme_zen3_summary_kernel_table_is_what_the_run_prints(name, doc):
    """The Zen 3 kernel table (the README: today's build; the record: the build before) and the speed-ups its
    bullet quotes from it."""
    gemm = _script("bench_cpu_gemm", "kernels")
    data = json.loads((REPO / f"bench/results/cpu/{name}.json").read_text())
    readme = (REPO / doc).read_text()
    assert gemm.table(data) in readme and f"--table --out bench/results/cpu/{name}.json" in readme
    assert data["avx2_path"] and not data["avx512_path"]
    flat = " ".join(readme.split())
    x = {(r["kernel"], r["threads"]): r["speedup_vs_fp32"] for r in data["rows"]
         if r["shape"] == "llama3-8b down" and r["m"] == 1}
    labels = [("int4_a8", "int4 a8"), ("int4", "exact int4"), ("semi24", "2:4 with bf16 values"),
              ("int4_semi24_a8", "int4 + 2:4 a8")]
    if doc == "README.md":
        labels += [("int8_a8", "int8 a8"), ("mxfp4_a8", "MXFP4 a8")]
    for kernel, label in labels:
        assert f"{label} {x[kernel, 1]:.2f}x / {x[kernel, 2]:.2f}x" in flat, kernel
    for kernel in ("torch_int8", "torch_int4"):
        assert f"{x[kernel, 1]:.2f}x / {x[kernel, 2]:.2f}x" in flat, kernel
    reads = [data["bandwidth"][t]["read_gbps"] for t in ("1", "2")]
    assert f"{reads[0]:.1f} GB/s at one thread, {reads[1]:.1f} at two" in flat


def test_readme_zen3_decode_targets_are_the_tables():
    """The Zen 3 decode table's bullets quote its JSON: the end-to-end ratios to dense fp32 (compiled and eager)."""
    flat = " ".join(_readme().split())
    run = json.loads((REPO / "bench" / "results" / "cpu" / "smollm2_decode_zen3.json").read_text())
    rows = {r["variant"]: r for r in run["rows"]}

    def x(variant: str, compiled: bool = True) -> str:
        speed = (lambda r: r["compiled"]["tokens_per_s"]) if compiled else (lambda r: r["tokens_per_s"])
        return f"{speed(rows[variant]) / speed(rows['dense fp32']):.2f}x"

    assert (f"compiled: int4 g128 **{x('int4 g128')}** dense fp32 (1.8x: met; {x('int4 g128', False)} eager); int4 + 2:4 "
            f"**{x('2:4 + int4')}** with the tied fp32 head (2x: not met) and **{x('2:4 + int4 + int8 head')}** with the "
            f"int8 head (met; int4 with the int8 head {x('int4 g128 + int8 head')})") in flat
    assert f"2:4 with bf16 values (fp32 model) {x('2:4')} compiled" in flat


def test_readme_zen3_instruction_ceilings_and_targets_are_what_the_runs_print():
    """The AVX2 section on what Zen 3's instructions allow: the table of loop bodies holds each line's lowest
    cycles (and highest GB/s) over the three runs in the committed output of vector_throughput_avx2.cpp, whose
    lines are the ones that file prints; the A/B table rows are the committed A/B runs' 10th percentiles; the
    targets table is the script's on this build's JSON (the AVX2 path), and the figures quoted are its."""
    readme = _readme()
    flat = " ".join(readme.split())
    out = (REPO / "bench" / "results" / "cpu" / "vector_throughput_avx2_zen3.txt").read_text()
    source = (REPO / "bench" / "kernels" / "cpu" / "vector_throughput_avx2.cpp").read_text()
    best: dict[str, tuple[float, float]] = {}
    for m in re.finditer(r"^(.+?)\s+([\d.]+) cycles a step:\s+([\d.]+) GB/s", out, re.M):
        label, cyc, gbps = m.group(1).strip(), float(m.group(2)), float(m.group(3))
        old = best.get(label, (1e9, 0.0))
        best[label] = (min(old[0], cyc), max(old[1], gbps))
    assert len(best) == 7 and out.count("UTC 2026") == 3
    for label, (cyc, gbps) in best.items():
        assert f'BENCH("{label}"' in source
        assert f"| {label} | {cyc:.2f} | {gbps:.1f} |" in readme, label
    # the A/B table: (file, row label, shape, tokens, threads)
    rows = [("mxfp4_bytes_cache_1t", "MXFP4, fp32 activations", "1024 x 14336 (in cache)", 1, 1),
            ("mxfp4_bytes_memory_1t", "MXFP4, fp32 activations", "4096 x 14336 (memory)", 1, 1),
            ("mxfp4_bytes_memory_2t", "MXFP4, fp32 activations", "4096 x 14336 (memory)", 1, 2),
            ("int4_a8_group_cache_1t", "int4 a8 (g128)", "1024 x 14336 (in cache)", 1, 1),
            ("int4_a8_group_cache_m4", "int4 a8 (g128)", "1024 x 14336 (in cache)", 4, 1),
            ("int4_a8_group_memory_1t", "int4 a8 (g128)", "4096 x 14336 (memory)", 1, 1),
            ("int4_a8_group_memory_2t", "int4 a8 (g128)", "4096 x 14336 (memory)", 1, 2)]
    for name, label, shape, m, threads in rows:
        ab = json.loads((REPO / "bench" / "results" / "cpu" / f"ab_zen3_{name}.json").read_text())
        assert ab["command"].startswith("python bench/kernels/ab_builds.py") and ab["builds"]["base"]["commit"] == "3abfc25"
        assert (ab["m"], ab["threads"], f"{ab['n']} x {ab['k']}") == (m, threads, shape.split(" (")[0]), name
        assert ab["acts"] == ("float" if label.startswith("MXFP4") else "int8") and ab["rounds"] == 8
        b, n = ab["builds"]["base"]["p10_ms"], ab["builds"]["new"]["p10_ms"]
        assert (f"| {label} | {shape}, {m}, {threads} | {b:.3f} ms | {n:.3f} ms | "
                f"{100 * ab['change']['p10_ms']:+.1f}% |") in readme, name
    targets = _script("cpu_targets", "kernels")
    data = json.loads((REPO / "bench" / "results" / "cpu" / "cpu_targets_zen3_bytes.json").read_text())
    assert data["memory"]["avx2_path"] and not data["memory"]["avx512_path"]
    assert targets.table(data) in readme and "--table --out bench/results/cpu/cpu_targets_zen3_bytes.json" in readme
    rows1 = {r["kernel"]: r for r in data["memory"]["rows"] if r["m"] == 1 and r["threads"] == 1}
    a8, fp32, exact = rows1["int4_a8"], rows1["fp32"], rows1["int4"]
    assert (f"**{100 * a8['read_bw_fraction']:.0f}%** of the read at one thread ({a8['ms']:.3f} ms)") in flat
    assert f"**{fp32['ms'] / a8['ms']:.2f}x** fp32 dense at one thread" in flat
    assert f"({fp32['ms'] / exact['ms']:.2f}x," in flat
    assert f"MXFP4 kernel streams {100 * rows1['mxfp4']['read_bw_fraction']:.0f}% of the read" in flat
    # SmolLM2's shapes and its decode, this build against the commit before
    for name in ("int4_a8_group_smollm2_up_2t", "int4_a8_group_smollm2_down_2t", "mxfp4_bytes_smollm2_up_2t",
                 "mxfp4_bytes_smollm2_down_2t"):
        ab = json.loads((REPO / "bench" / "results" / "cpu" / f"ab_zen3_{name}.json").read_text())
        assert ab["threads"] == 2 and {ab["n"], ab["k"]} == {576, 1536} and ab["builds"]["base"]["commit"] == "3abfc25"
        assert f"{100 * ab['change']['p10_ms']:.1f}%" in flat, name
    decode = _script("cpu_decode")
    speeds = {}
    for build in ("bytes", "3abfc25"):
        data = json.loads((REPO / "bench" / "results" / "cpu" / f"smollm2_decode_zen3_{build}.json").read_text())
        assert data["model"] == "smollm2-135m" and decode.table(data) in readme
        assert {r["threads"] for r in data["rows"]} == {2}
        speeds[build] = {r["variant"]: r for r in data["rows"]}
    for variant, label in (("mxfp4", "MXFP4"), ("int4 g128 a8", "int4 a8")):
        new, old = speeds["bytes"][variant], speeds["3abfc25"][variant]
        assert (f"{label} {new['tokens_per_s']:.1f} / {new['compiled']['tokens_per_s']:.1f} against "
                f"{old['tokens_per_s']:.1f} / {old['compiled']['tokens_per_s']:.1f}") in flat, variant


def test_readme_a8_accuracy_table_is_what_the_script_prints():
    """The int8-activation table (`a8_accuracy.py --table`) comes from its committed JSON; the data-free
    recipe's exact row reproduces its committed result file (same pipeline, same weights); the calibrated
    ones are compression runs of their own (another thread count than those files: GPTQ / SparseGPT moved
    by up to 5% between runs), which is why the table compares both backends on one packed model."""
    script, data = _committed_table("a8_accuracy", "bench/results/cpu/a8_accuracy.json")
    _, int8 = _committed_table("a8_accuracy", "bench/results/cpu/a8_accuracy_int8.json")  # measured later
    rows = data["rows"] + int8["rows"]
    assert [r["recipe"] for r in rows] == list(script.RECIPES)
    assert "--table --out bench/results/cpu/a8_accuracy_int8.json" in _readme()
    for rtn in (r for r in rows if r["recipe"] in ("mxfp4-rtn", "int8-rtn")):
        assert abs(rtn["ppl"]["exact"] / rtn["committed_ppl"] - 1) < 1e-3
    for row in rows:
        assert row["a8_modules"] > 0 and abs(row["ppl"]["a8"] / row["ppl"]["exact"] - 1) < 0.01, row["recipe"]


def test_readme_head_accuracy_table_is_what_the_script_prints():
    """The int8 LM head table (`head_accuracy.py --table`) comes from its committed JSON; its dense row with
    the fp32 head reproduces the committed dense result (same pipeline), the int8 head is packed and
    costs under 1% perplexity on every row, and it cuts the head's bytes (the model grows by the untied
    copy, a quarter of the fp32 head)."""
    script, data = _committed_table("head_accuracy", "bench/results/cpu/head_accuracy.json")
    assert [r["recipe"] for r in data["rows"]] == list(script.RECIPES)
    dense = json.loads((REPO / "bench" / "results" / "smollm2-135m_dense_limit40.json").read_text())["ppl"]["wikitext2"]
    assert abs(data["rows"][0]["ppl"]["fp32_head"] / dense - 1) < 1e-3
    for row in data["rows"]:
        assert row["head_layout"] == "int8" and abs(row["ppl"]["int8_head"] / row["ppl"]["fp32_head"] - 1) < 0.01
        growth = row["bytes"]["int8_head"] - row["bytes"]["fp32_head"]
        assert 0.24 < growth / (49152 * 576 * 4) < 0.27, row["recipe"]  # int8 codes + fp16 scales of the head


def test_readme_export_table_is_what_the_script_prints():
    """The Deploy table (`export_readers.py --table`) is printed from its committed JSON; every quantized
    tensor of the exact variants was bit-exact in GGUF, and the readers' perplexities are within 1% of
    sparsekit's on the same windows."""
    readme = _readme()
    script = _script("export_readers")
    data = json.loads((REPO / "bench" / "results" / "export" / "readers.json").read_text())
    assert data["command"].startswith("python bench/experiments/export_readers.py")
    assert script.table(data) in readme
    assert "python bench/experiments/export_readers.py --table" in readme
    for row in data["rows"]:
        assert abs(row["compressed_tensors"]["ppl"] / row["sparsekit_ppl"] - 1) < 0.01, row["variant"]
        if row["gguf"]["ppl"] is not None:
            assert abs(row["gguf"]["ppl"] / row["sparsekit_ppl"] - 1) < 0.01, row["variant"]
        if "asym" not in row["variant"]:
            assert row["gguf"]["inexact_quantized"] == 0, row["variant"]


def test_readme_calibration_speed_table_is_what_the_script_prints():
    """The faster-pipeline table comes from its committed JSON: the shared statistics left the masks
    bit-identical, bf16 forwards brought the prune step under 60% of the time before, and every variant's
    perplexity stays within 5% of the one before the change."""
    _, data = _committed_table("calib_speed", "bench/results/cpu/calib_speed.json")
    rows = {r["variant"]: r for r in data["rows"]}
    assert rows["fp32-b1"]["masks_sha256"] == rows["before"]["masks_sha256"]
    assert rows["fp32-b1"]["ppl"] == rows["before"]["ppl"]
    assert rows["bf16-b8"]["prune_seconds"] <= 0.6 * rows["before"]["prune_seconds"]
    assert rows["bf16-b8"]["calibration"]["forward_dtype"] == "bfloat16"
    for r in data["rows"]:
        assert abs(r["ppl"] / rows["before"]["ppl"] - 1) < 0.05, r["variant"]


def test_readme_nm_study_table_is_what_the_script_prints():
    """The 2:4 study table is what `nm_study.py --table` prints from the committed cells, each measured by
    that script on the standard protocol."""
    script = _script("nm_study")
    readme = _readme()
    out = REPO / "bench" / "results" / "nm_study"
    assert script.table(out) in readme and "python bench/experiments/nm_study.py --table" in readme
    assert script.flops_table() in readme and "python bench/experiments/nm_study.py --flops" in readme
    for file in out.glob("*.json"):
        cell = json.loads(file.read_text())
        assert cell["command"].startswith("python bench/experiments/nm_study.py"), file.name
        # the standard 128 calibration windows, unless the row sets its own (a study of more data)
        nsamples = script.ROWS[cell["row"]].get("calib_nsamples", 128)
        assert cell["protocol"]["limit"] == 40 and cell["calibration"]["nsamples"] == nsamples, file.name


def test_best_2_4_recipe_is_the_study_row_it_names():
    from sparsekit.recipe import load_recipe

    script = _script("nm_study")
    best = load_recipe(str(REPO / "bench" / "recipes" / "best-2-4.yaml"))
    assert best == load_recipe(script.recipe_for("2:4", "sparsegpt+permute+reconstruct-model-64x8"))
    for seed in (0, 1, 2):  # the study's mean over three calibration draws is the README's figure
        cell = json.loads((REPO / "bench" / "results" / "nm_study" /
                           f"2-4_sparsegpt+permute+reconstruct-model-64x8_seed{seed}.json").read_text())
        assert load_recipe(cell["recipe"]) == best


def test_best_2_4_healed_recipes_are_the_study_rows_they_name():
    from sparsekit.recipe import load_recipe

    script = _script("nm_study")
    row = "sparsegpt+permute+reconstruct-model+heal-655k-lr5e-4"
    healed = load_recipe(str(REPO / "bench" / "recipes" / "best-2-4-healed.yaml"))
    assert healed == load_recipe(script.recipe_for("2:4", row))
    # healed from the 4-epoch fit (the best recipe when it ran)
    assert healed.steps[0] == load_recipe(script.recipe_for("2:4", "sparsegpt+permute+reconstruct-model")).steps[0]
    cell = REPO / "bench" / "results" / "nm_study" / f"2-4_{row}_seed0.json"
    result = json.loads(cell.read_text())
    assert load_recipe(result["recipe"]) == healed
    assert result["heal"]["tokens"] == healed.steps[1].tokens and result["heal"]["steps"] == 320
    assert result["compress_seconds"] < 2 * 3600  # the budget: pruning + healing within 2 hours
    quantized = load_recipe(str(REPO / "bench" / "recipes" / "best-2-4-healed-int4.yaml"))
    assert quantized == load_recipe(script.recipe_for("2:4", row, int4=True))
    # written by the --continue-saved run the recipe's comment names: the quantize step on the healed checkpoint
    cell = json.loads((REPO / "bench" / "results" / "nm_study" / f"2-4_{row}+int4_seed0.json").read_text())
    assert load_recipe(cell["recipe"]) == quantized and cell["continued_from"]["checkpoint"] == f"2-4_{row}_seed0"
    assert cell["heal"] == result["heal"] and cell["sparsity"] == 0.5


def test_structured_search_recipes_are_the_rows_they_name():
    """The two recipe files of the structured search reproduce their README rows: the study runs them as they
    are, and the committed records were made by the same steps."""
    from sparsekit.recipe import load_recipe

    script = _script("structured")
    records = json.loads((REPO / "bench" / "results" / "structured" / "smollm2-135m_limit40.json").read_text())
    for row, file in (("search-15", "structured-search-15.yaml"),
                      ("search-15-reconstruct-64x8", "structured-search-15-reconstruct.yaml")):
        recipe = load_recipe(str(REPO / "bench" / "recipes" / file))
        assert load_recipe(script.configs()[row]) == recipe, row
        assert load_recipe(records["results"][row]["recipe"]) == recipe, row
    assert records["results"]["search-15-reconstruct-64x8"]["ppl"] <= 30  # the target at 15%


def test_readme_heal_speed_table_is_what_the_script_prints():
    """The healing-speed table comes from its committed JSON: each row timed whole healing steps of the
    healed recipe, and its projected budget is that recipe's step count at the measured pace."""
    script, data = _committed_table("heal_speed", "bench/results/cpu/heal_speed.json")
    assert data["recipe"] == "bench/recipes/best-2-4-healed.yaml" and data["recipe_steps"] == 320
    for r in data["rows"]:
        pace = script.pace(r["seconds"], r["steps"], r.get("first_step_seconds"))
        assert r["steps"] >= 1 and abs(r["seconds_per_step"] - pace) < 1e-6
        assert abs(r["recipe_minutes"] - r["seconds_per_step"] * data["recipe_steps"] / 60) < 1e-6


def test_readme_position_table_is_what_the_script_prints():
    """The by-position table comes from its committed JSON, whose healed models are the study's committed rows
    (the same WikiText-2 perplexity to the last digits: the same windows, the same weights)."""
    _, data = _committed_table("position_nll", "bench/results/position_nll.json")
    assert data["protocol"] == {"dataset": "wikitext2", "seqlen": 2048, "limit": 40}
    for label, m in data["models"].items():
        if "heal-" in m["model"]:
            cell = json.loads((REPO / "bench" / "results" / "nm_study" / f"{Path(m['model']).name}.json").read_text())
            assert abs(m["ppl"] - cell["ppl"]) < 1e-3 * cell["ppl"], label


def test_readme_gpu_tables_are_what_the_script_prints():
    spec = importlib.util.spec_from_file_location("gpu_results", REPO / "scripts" / "gpu_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = _readme()
    results = sorted((REPO / "bench" / "results" / "gpu").glob("*.json"))
    assert results, "no committed GPU result"
    for path in results:
        data = json.loads(path.read_text())
        assert data["command"].startswith("python scripts/gpu_results.py ") and data["env"]["device"]
        assert module.table(data) in readme, f"README lacks the tables of {path.name}"
        assert f"python scripts/gpu_results.py --table {path.relative_to(REPO)}" in readme


#: the GEMV sections' A/B weights: file key -> the README's row label
GEMV_AB_SHAPES = {"head": "49152 x 576 (SmolLM2's tied head)", "memory": "4096 x 14336 (Llama-3-8B down)"}


def test_readme_zen3_fp32_gemv_is_what_the_runs_print():
    """The section on the fp32 LM head on sparsekit's GEMV (Zen 3): the A/B rows are the committed runs' 10th
    percentiles (against 69ff570's prefetching kernel, and against torch's F.linear in the same build), the kernel
    table is bench_cpu_gemm's on its JSON with the LM head's row quoted from it, and the decode tables and ratios are
    the two committed decode runs'."""
    readme = _readme()
    flat = " ".join(readme.split())
    cpu = REPO / "bench" / "results" / "cpu"
    for key, label in GEMV_AB_SHAPES.items():
        for t in (1, 2):
            ab = json.loads((cpu / f"ab_zen3_fp32_gemv_prefetch_{key}_{t}t.json").read_text())
            assert (ab["layout"], ab["base_layout"], ab["threads"], ab["m"], ab["rounds"]) == ("fp32_gemv", "fp32_gemv", t, 1, 8)
            assert ab["builds"]["base"]["commit"] == "69ff570" and f"ab_zen3_fp32_gemv_prefetch_{key}_{t}t.json" in ab["command"]
            b, n = ab["builds"]["base"]["p10_ms"], ab["builds"]["new"]["p10_ms"]
            assert f"| {label} | {t} | {b:.3f} ms | {n:.3f} ms | {100 * ab['change']['p10_ms']:+.1f}% |" in readme
            vs = json.loads((cpu / f"ab_zen3_fp32_gemv_vs_torch_{key}_{t}t.json").read_text())
            assert (vs["base_layout"], vs["layout"], vs["threads"]) == ("fp32", "fp32_gemv", t)
            assert vs["builds"]["base"]["tree"] == vs["builds"]["new"]["tree"]
            b, n = vs["builds"]["base"]["p10_ms"], vs["builds"]["new"]["p10_ms"]
            gbps = vs["weight_bytes"] / n / 1e6
            assert f"| {label} | {t} | {b:.3f} ms | {n:.3f} ms ({gbps:.1f} GB/s) | x{b / n:.2f} |" in readme
    gemm = _script("bench_cpu_gemm", "kernels")
    data = json.loads((cpu / "cpu_gemm_zen3_gemv.json").read_text())
    assert gemm.table(data) in readme and "--out bench/results/cpu/cpu_gemm_zen3_gemv.json" in readme
    assert data["avx2_path"] and not data["avx512_path"] and all(r["rel_err"] < 1e-5 for r in data["rows"]
                                                                 if r["kernel"] == "fp32_gemv")
    head = {(r["m"], r["threads"]): r for r in data["rows"] if r["shape"] == "49152x576" and r["kernel"] == "fp32_gemv"}
    assert all(f"x{head[1, t]['speedup_vs_fp32']:.2f} at {('one', 'two')[t - 1]} thread" in flat for t in (1, 2))
    decode = _script("cpu_decode")
    runs = [json.loads((cpu / f"smollm2_decode_zen3_gemv{s}.json").read_text()) for s in ("", "_repeat")]
    for run in runs:
        assert run["model"] == "smollm2-135m" and decode.table(run) in readme and {r["threads"] for r in run["rows"]} == {2}
    speed = [{r["variant"]: r["compiled"]["tokens_per_s"] for r in run["rows"]} for run in runs]

    def x(variant: str, against: str = "dense fp32") -> str:
        return " / ".join(f"{s[variant] / s[against]:.2f}x" for s in speed)

    assert f"the dense model on the same GEMV {x('dense fp32 (sparsekit GEMV)')} the dense model on torch's" in flat
    for variant, label in (("2:4 + int4", "int4 + 2:4 exact"), ("2:4 + int4 a8", "int4 + 2:4 a8"),
                           ("int4 g128", "int4 g128 exact"), ("int4 g128 a8", "int4 g128 a8")):
        assert (f"{label} {x(variant)} dense fp32 on torch, {x(variant, 'dense fp32 (sparsekit GEMV)')} dense fp32 on "
                "the same GEMV") in flat, variant


def test_readme_zen3_bf16_gemv_is_what_the_runs_print():
    """The section on bf16 weights on sparsekit's GEMV (Zen 3): the A/B rows are the committed runs' 10th percentiles
    (against torch's F.linear in bf16, in the same build), the kernel table is bench_cpu_gemm's on its JSON, and the
    decode tables and ratios are the committed decode runs' (SmolLM2 before and after the prefill change, and
    Llama-3.2-1B's configuration)."""
    readme = _readme()
    flat = " ".join(readme.split())
    cpu = REPO / "bench" / "results" / "cpu"
    for key, label in GEMV_AB_SHAPES.items():
        for t in (1, 2):
            name = f"ab_zen3_bf16_gemv_vs_torch_{key}_{t}t.json"
            vs = json.loads((cpu / name).read_text())
            assert (vs["base_layout"], vs["layout"], vs["acts"], vs["threads"], vs["m"]) == ("bf16", "bf16_gemv", "bf16", t, 1)
            assert vs["builds"]["base"]["tree"] == vs["builds"]["new"]["tree"] and name in vs["command"]
            b, n = vs["builds"]["base"]["p10_ms"], vs["builds"]["new"]["p10_ms"]
            gbps = vs["weight_bytes"] / n / 1e6
            assert f"| {label} | {t} | {b:.3f} ms | {n:.3f} ms ({gbps:.1f} GB/s) | x{b / n:.2f} |" in readme
    gemm = _script("bench_cpu_gemm", "kernels")
    data = json.loads((cpu / "cpu_gemm_zen3_bf16_gemv.json").read_text())
    assert gemm.table(data) in readme and "--out bench/results/cpu/cpu_gemm_zen3_bf16_gemv.json" in readme
    assert data["avx2_path"] and not data["avx512_path"]
    assert all(r["rel_err"] < 2.0**-8 for r in data["rows"] if r["kernel"] == "bf16_gemv")
    rows = {(r["shape"], r["m"], r["threads"], r["kernel"]): r["ms"] for r in data["rows"]}

    def x(shape: str, m: int, slow: str) -> str:
        return " / ".join(f"x{rows[shape, m, t, slow] / rows[shape, m, t, 'bf16_gemv']:.2f}" for t in (1, 2))

    assert f"GEMV is {x('llama3-8b down', 1, 'bf16')} torch's bf16 on 4096 x 14336 (one / two threads) and " \
           f"{x('49152x576', 1, 'bf16')} on the head" in flat
    assert f"it reads half the bytes {x('llama3-8b down', 1, 'fp32_gemv')} and {x('49152x576', 1, 'fp32_gemv')} faster" in flat
    assert f"and the GEMV is {x('llama3-8b down', 16, 'bf16')} faster" in flat
    grow = " / ".join(f"{rows['llama3-8b down', 16, t, 'bf16'] / rows['llama3-8b down', 1, t, 'bf16']:.2f}x" for t in (1, 2))
    assert f"At 16 tokens torch's bf16 takes {grow} its one-token time" in flat
    decode = _script("cpu_decode")
    run = json.loads((cpu / "smollm2_decode_zen3_bf16_prefill.json").read_text())
    before = {r["variant"]: r for r in json.loads((cpu / "smollm2_decode_zen3_bf16_gemv.json").read_text())["rows"]}
    assert run["model"] == "smollm2-135m" and decode.table(run) in readme and {r["threads"] for r in run["rows"]} == {2}
    by = {r["variant"]: r for r in run["rows"]}
    speed = {v: r["compiled"]["tokens_per_s"] for v, r in by.items()}
    assert f"dense bf16 on the GEMV decodes {speed['dense bf16 (sparsekit GEMV)'] / speed['dense bf16']:.2f}x" in flat
    assert f"{speed['dense bf16 (sparsekit GEMV)'] / speed['dense fp32']:.2f}x dense fp32" in flat
    assert f"the 2:4 bf16 model (its head on the GEMV) {speed['2:4 bf16 model'] / speed['dense fp32']:.2f}x" in flat
    pre = {v: r["prefill_ms"] for v, r in by.items()}
    assert (f"dense bf16 {pre['dense bf16']:.0f} ms on torch's kernels, {pre['dense bf16 (sparsekit GEMV)']:.0f} ms on "
            f"`DenseLinear` (fp32 at {pre['dense fp32']:.0f} ms)") in flat
    assert f"bf16 model {pre['2:4 bf16 model']:.0f} ms (it took {before['2:4 bf16 model']['prefill_ms']:.0f} ms before" in flat
    assert (f"prefill took {before['dense bf16']['prefill_ms']:.0f} ms in bf16 against {before['dense fp32']['prefill_ms']:.0f} ms "
            "in fp32") in flat
    llama = json.loads((cpu / "llama32_1b_random_decode_zen3_gemv.json").read_text())
    assert llama["model"] == "llama-3.2-1b-random" and decode.table(llama) in readme
    lc = {r["variant"]: r["compiled"]["tokens_per_s"] for r in llama["rows"]}
    assert (f"the dense model on sparsekit's GEMV decodes {lc['dense fp32 (sparsekit GEMV)'] / lc['dense fp32']:.2f}x the same "
            f"model on torch's kernels in fp32 and {lc['dense bf16 (sparsekit GEMV)'] / lc['dense bf16']:.2f}x in bf16") in flat
    assert f"int4 g128 {lc['int4 g128'] / lc['dense fp32']:.2f}x and int4 + 2:4 {lc['2:4 + int4'] / lc['dense fp32']:.2f}x" in flat
