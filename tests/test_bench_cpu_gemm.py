"""bench/kernels/bench_cpu_gemm.py: a forced SIMD path is timed, checked and recorded; a bad one is exit 2.
bench/kernels/cpu_targets.py: both runs kept, every kernel judged, a wrong one not.
bench/kernels/cpu/huge_pages.py: both reads and the move onto 2 MiB pages recorded.
bench/kernels/cpu/vector_throughput_avx2.cpp: builds with its documented command and prints every line."""

import importlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sparsekit import _ext
from tests.bench_scripts import load_script


def _bench():
    return load_script("bench_cpu_gemm", "kernels")


@pytest.mark.skipif(not _ext.cpu_info().get("avx2"), reason="needs the AVX2 path of sparsekit._cpu")
def test_a_forced_avx2_run_records_its_path_and_checks_every_row(tmp_path):
    out = tmp_path / "gemm.json"
    assert _bench().main(["--shapes", "smollm2", "--quick", "--ms", "1,17", "--threads", "1", "--kernels",
                          "fp32,fp32_gemv,bf16,bf16_gemv,int4,mxfp4", "--path", "avx2", "--budget", "0.05", "--out",
                          str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["path"] == "avx2" and data["avx2_path"]
    # sparsekit's kernels; the GEMVs checked against torch's F.linear on the same weight, bf16 to its output's rounding
    ours = [r for r in data["rows"] if r["kernel"] not in ("fp32", "bf16")]
    assert {r["m"] for r in ours} == {1, 17}
    assert all(r["rel_err"] < (2.0**-8 if r["kernel"] == "bf16_gemv" else 1e-5) for r in ours)
    assert {r["kernel"] for r in ours} == {"fp32_gemv", "bf16_gemv", "int4", "mxfp4"}


def test_a_path_this_cpu_lacks_or_an_unknown_one_is_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _bench().main(["--path", "neon", "--out", str(tmp_path / "x.json")])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
    missing = [p for p in ("avx512", "avx2") if not _ext.cpu_info().get(p)]
    if missing:
        assert _bench().main(["--path", missing[0], "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_in_cache_times_one_copy_of_each_weight(tmp_path, monkeypatch):
    bench = _bench()
    # --pages sets SPARSEKIT_HUGE_PAGES for the run (the extension's own weight copies follow it), whatever the
    # shell had, and restores the shell's value after
    monkeypatch.setenv("SPARSEKIT_HUGE_PAGES", "1")
    during, measure = [], bench._measure
    monkeypatch.setattr(bench, "_measure", lambda *a: (during.append(os.environ["SPARSEKIT_HUGE_PAGES"]), measure(*a)))
    out = tmp_path / "gemm.json"
    args = ["--shapes", "smollm2", "--quick", "--ms", "1", "--threads", "1", "--kernels", "fp32,int4", "--budget",
            "0.05", "--out", str(out)]
    assert bench.main([*args, "--in-cache"]) == 0
    data = json.loads(out.read_text())
    assert data["in_cache"] and {r["weight_copies"] for r in data["rows"]} == {1}
    assert data["pages"]["asked"] == "4k" and during == ["0"] and data["pages"]["huge_bytes"] == 0
    # the default rotates copies past the cache (several for these small weights); the bandwidth buffers (the
    # weights here are under 2 MiB) go on huge pages
    assert bench.main([*args, "--pages", "2m"]) == 0
    data = json.loads(out.read_text())
    assert not data["in_cache"] and min(r["weight_copies"] for r in data["rows"]) > 1
    assert data["pages"]["asked"] == "2m" and during == ["0", "1"]
    assert data["pages"]["huge_bytes"] > 0 or data["pages"]["unavailable"] or data["pages"]["reason"]
    assert os.environ["SPARSEKIT_HUGE_PAGES"] == "1"


def test_an_n_by_k_shape_is_its_own_label_and_a_bad_one_is_exit_2(tmp_path, capsys):
    out = tmp_path / "gemm.json"
    assert _bench().main(["--shapes", "64x256", "--ms", "1", "--threads", "1", "--kernels", "int4", "--budget",
                          "0.02", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["shape"], r["n"], r["k"]) for r in rows] == [("64x256", 64, 256)] and rows[0]["rel_err"] < 1e-5
    bad = tmp_path / "bad.json"
    for shape in ("64x100", "64", "0x256", "ax256"):
        assert _bench().main(["--shapes", shape, "--out", str(bad)]) == 2
        assert shape in capsys.readouterr().err and not bad.exists()


def test_cpu_targets_runs_both_measurements_and_judges_each_kernel(tmp_path, monkeypatch):
    targets = load_script("cpu_targets", "kernels")
    # the real pipeline on small shapes: the memory run (with the baselines) and the one-copy cache run
    monkeypatch.setattr(targets, "MEMORY_SHAPE", "64x512")
    monkeypatch.setattr(targets, "CACHE_SHAPE", "32x512")
    # (the bandwidth probe, 2 GiB read twice, is timed by the tests above)
    monkeypatch.setattr(importlib.import_module("bench.kernels.bench_cpu_gemm"), "bandwidth",
                        lambda huge=False: {"read_gbps": 10.0, "copy_gbps": 10.0})
    out = tmp_path / "targets.json"
    assert targets.main(["--threads", "1", "--budget", "0.02", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["command"].startswith("python bench/kernels/cpu_targets.py")
    assert {r["kernel"] for r in data["memory"]["rows"]} == {*targets.BASELINES, *targets.DECODE}
    assert {r["kernel"] for r in data["cache"]["rows"]} == set(targets.DECODE)
    assert data["cache"]["in_cache"] and not data["memory"]["in_cache"]
    assert data["memory"]["pages"]["asked"] == data["cache"]["pages"]["asked"] == "4k"  # a model's by default
    text = targets.table(data)
    assert all(f"| {k} |" in text for k in targets.DECODE) and "int4 + 2:4 >= 1.25x int4" in text


def test_cpu_targets_verdicts():
    targets = load_script("cpu_targets", "kernels")

    def row(kernel, gbps, frac, ms):
        return {"kernel": kernel, "threads": 1, "m": 1, "gbps": gbps, "read_bw_fraction": frac, "ms": ms}

    bw = {"1": {"read_gbps": 10.0}}
    data = {"memory": {"bandwidth": bw, "rows": [row("int8", 7.5, 0.75, 1.0), row("int4", 5.0, 0.5, 1.0),
                                                 row("mxfp4", 5.0, 0.5, 1.0), row("fp32", 1.0, 0.9, 4.0),
                                                 row("int4_semi24", 4.0, 0.4, 0.9)]},
            "cache": {"bandwidth": bw, "rows": [row("int8", 9.0, 0.9, 0.2), row("int4", 6.0, 0.6, 0.2),
                                                row("mxfp4", 8.0, 0.8, 0.2)]}}
    lines = {line.split(" | ")[0].strip("| "): line for line in targets.table(data).splitlines()}
    assert lines["int8"].endswith("| 1t yes |") and "9.0 GB/s, 90%" in lines["int8"]
    assert lines["int4"].endswith("| 1t no (ceiling below) |") and "6.0 GB/s, 60%" in lines["int4"]
    assert lines["mxfp4"].endswith("| 1t no |")  # below, but its ceiling is not: headroom
    assert "| semi24 |" not in targets.table(data)  # not measured: no row
    assert lines["int4 g128 >= 5x fp32 dense"].endswith("| 1t no |") and "x4.00" in lines["int4 g128 >= 5x fp32 dense"]
    assert lines["int4 + 2:4 >= 1.25x int4"].endswith("| 1t no |")
    assert "| int4 g128 >= 2x torch int4 | – |" in targets.table(data)  # no torch_int4 row: no verdict


def test_cpu_targets_a_kernel_over_the_target_is_met_whatever_its_ceiling():
    targets = load_script("cpu_targets", "kernels")
    bw = {"1": {"read_gbps": 10.0}}
    row = {"kernel": "int8", "threads": 1, "m": 1, "ms": 1.0}
    data = {"memory": {"bandwidth": bw, "rows": [{**row, "gbps": 7.5, "read_bw_fraction": 0.75}]},
            "cache": {"bandwidth": bw, "rows": [{**row, "gbps": 6.0, "read_bw_fraction": 0.6}]}}
    line = next(x for x in targets.table(data).splitlines() if x.startswith("| int8 |"))
    assert line.endswith("| 1t yes |")  # a conservative ceiling (fixed costs on fewer rows) cannot unmeet it


def test_cpu_targets_does_not_judge_a_wrong_kernel(tmp_path, monkeypatch, capsys):
    targets = load_script("cpu_targets", "kernels")
    gemm = importlib.import_module("bench.kernels.bench_cpu_gemm")  # the module cpu_targets runs
    monkeypatch.setattr(targets, "MEMORY_SHAPE", "16x256")
    monkeypatch.setattr(targets, "CACHE_SHAPE", "16x256")
    monkeypatch.setattr(targets, "DECODE", {"int4": "int4 g128"})
    monkeypatch.setattr(targets, "BASELINES", ())
    monkeypatch.setattr(gemm, "max_rel_err", lambda kernel: -1.0)  # every kernel now counts as wrong
    monkeypatch.setattr(gemm, "bandwidth", lambda huge=False: {"read_gbps": 1.0, "copy_gbps": 1.0})
    out = tmp_path / "t.json"
    assert targets.main(["--threads", "1", "--budget", "0.01", "--out", str(out)]) == 1
    assert "int4 (1t" in capsys.readouterr().err and not out.exists()


def test_cpu_targets_pages_table_compares_two_runs(tmp_path, capsys):
    targets = load_script("cpu_targets", "kernels")

    def run(read, ms, pages):
        rows = [{"kernel": k, "threads": 1, "m": 1, "ms": ms} for k in ("fp32", "int4")]
        return {"memory": {"bandwidth": {"1": {"read_gbps": read}}, "rows": rows, "pages": {"asked": pages}}}

    text = targets.pages_table(run(30.0, 2.0, "4k"), run(36.0, 1.5, "2m"))
    assert "| read (GB/s) | 30.0 | 36.0 | +20% |" in text and "| int4 | 2.000 ms | 1.500 ms | -25% |" in text
    assert "| int8 | – | – | – |" in text  # a kernel neither run timed
    huge, small = tmp_path / "2m.json", tmp_path / "4k.json"
    huge.write_text(json.dumps(run(36.0, 1.5, "2m")))
    assert targets.main(["--table", "--out", str(huge), "--versus", str(small)]) == 2
    assert "does not exist" in capsys.readouterr().err
    small.write_text(json.dumps(run(30.0, 2.0, "4k")))
    assert targets.main(["--table", "--out", str(small), "--versus", str(huge)]) == 2  # the runs swapped
    assert "got 2m and 4k" in capsys.readouterr().err
    assert targets.main(["--table", "--out", str(huge), "--versus", str(small)]) == 0
    assert "| int4 | 2.000 ms | 1.500 ms | -25% |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:  # --versus alone would measure and overwrite --out: refused
        targets.main(["--out", str(huge), "--versus", str(small)])
    assert exc.value.code == 2 and "needs --table" in capsys.readouterr().err


def test_cpu_targets_across_runs_gives_median_range_and_met_count(tmp_path, capsys):
    targets = load_script("cpu_targets", "kernels")

    def run(date, int4_ms, fp32_ms, frac, threads=(1,), pages="4k"):
        rows = [{"kernel": k, "threads": t, "m": 1, "ms": ms, "read_bw_fraction": frac}
                for k, ms in (("fp32", fp32_ms), ("int4", int4_ms)) for t in threads]
        bw = {str(t): {"read_gbps": 10.0 * t} for t in threads}
        cache = [{"kernel": "int4", "threads": t, "m": 1, "gbps": 5.0 * t} for t in threads]  # ceiling 50%
        return {"date": date, "memory": {"bandwidth": bw, "rows": rows, "pages": {"asked": pages}},
                "cache": {"bandwidth": bw, "rows": cache}}

    runs = [run("2026-12-07T06:52:41+00:00", 2.0, 12.0, 0.60), run("2026-12-07T06:56:00+00:00", 2.5, 11.0, 0.75),
            run("2026-12-07T07:00:00+00:00", 2.0, 9.0, 0.80)]
    text = targets.across_table(runs)
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()}
    # ratios 6.0, 4.4, 4.5: median 4.5, met (>= 5x) once
    assert lines["int4 g128 >= 5x fp32 dense"] == "| int4 g128 >= 5x fp32 dense | x4.50 (x4.40-x6.00) | 1/3 |"
    assert lines["int4"] == "| int4 | int4 g128 | 75% (60%-80%) | 2/3 | 50% |"  # met twice, whatever its ceiling
    assert lines["int4 + 2:4 >= 1.25x int4"] == "| int4 + 2:4 >= 1.25x int4 | – | – |"  # never measured
    assert text.startswith("Runs (their read bandwidth at 1 thread): 2026-12-07 06:52 UTC (10.0 GB/s);")
    with pytest.raises(ValueError, match="several runs"):
        targets.across_table(runs[:1])
    with pytest.raises(ValueError, match="different thread counts"):
        targets.across_table([runs[0], run("2026-12-07T07:05:00+00:00", 2.0, 9.0, 0.8, threads=(1, 2))])
    with pytest.raises(ValueError, match="different pages"):
        targets.across_table([runs[0], run("2026-12-07T07:05:00+00:00", 2.0, 9.0, 0.8, pages="2m")])
    files = []
    for i, r in enumerate(runs):
        files.append(tmp_path / f"r{i}.json")
        files[-1].write_text(json.dumps(r))
    assert targets.main(["--across", *map(str, files)]) == 0 and "| 1/3 |" in capsys.readouterr().out
    assert targets.main(["--across", str(files[0]), str(tmp_path / "none.json")]) == 2
    assert "none.json does not exist" in capsys.readouterr().err
    assert targets.main(["--across", str(files[0])]) == 2 and "got 1" in capsys.readouterr().err


def test_huge_pages_script_records_both_reads_and_the_move(tmp_path, monkeypatch, capsys):
    from sparsekit.utils import pages
    from sparsekit.utils.pages import unavailable

    script = load_script("huge_pages", "kernels/cpu")
    out = tmp_path / "pages.json"
    args = ["--threads", "1", "--rounds", "1", "--gib", "0.05", "--collapse-gib", "0.02", "--out", str(out)]
    if pages._kernel_before_6_1():
        pytest.skip("no MADV_COLLAPSE before Linux 6.1")
    if unavailable():
        assert script.main(args) == 2 and not out.exists()
        return
    assert script.main(args) == 0
    data = json.loads(out.read_text())
    assert set(data["read"]["1"]) == {"4k", "2m"} and all(v["median_gbps"] > 0 for v in data["read"]["1"].values())
    assert data["collapse"]["bytes"] > 0 and data["command"].startswith("python bench/kernels/cpu/huge_pages.py")
    monkeypatch.setenv("SPARSEKIT_HUGE_PAGES", "0")  # nothing can move: exit 2, the reason, nothing written
    out.unlink()
    assert script.main(args) == 2 and "SPARSEKIT_HUGE_PAGES=0" in capsys.readouterr().err and not out.exists()


def test_the_faster_of_two_read_probes_is_the_reference(tmp_path, monkeypatch):
    """The read is probed before and after a thread count's kernels; fractions are of the faster probe (a slow
    probe would put the kernels above what memory did reach), and both probes are kept."""
    bench = _bench()
    reads = iter([10.0, 20.0])
    monkeypatch.setattr(bench, "bandwidth", lambda huge=False: {"read_gbps": next(reads), "copy_gbps": 1.0})
    out = tmp_path / "gemm.json"
    assert bench.main(["--shapes", "64x256", "--ms", "1", "--threads", "1", "--kernels", "fp32,int4", "--budget",
                       "0.02", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["bandwidth"]["1"]["read_gbps"] == 20.0 and data["bandwidth"]["1"]["probes_read_gbps"] == [10.0, 20.0]
    assert all(abs(r["read_bw_fraction"] - r["gbps"] / 20.0) < 1e-12 for r in data["rows"])


@pytest.mark.skipif(not _ext.cpu_available(), reason="needs sparsekit._cpu")
@pytest.mark.parametrize("acts", ["float", "bf16"])
def test_semi24_kblocks_times_the_three_orders_of_the_same_weights(tmp_path, capsys, acts):
    """The K-blocked emulation computes the plain layout's product (checked before timing) and records every
    variant's per-round medians; bad arguments exit 2 before anything is built."""
    kblocks = load_script("semi24_kblocks", "kernels")
    out = tmp_path / "kb.json"
    assert kblocks.main(["--shape", "48x512", "--segments", "2", "--acts", acts, "--copies", "2", "--rounds", "2",
                         "--calls", "3", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["kb"] == 256 and data["command"].startswith("python bench/kernels/semi24_kblocks.py")
    assert {v: len(r) for v, r in data["rounds_ms"].items()} == {"plain": 2, "kblocks": 2, "stream": 2}
    assert data["rel_err_kblocks"] <= (2.0 ** -7 if acts == "bf16" else 1e-5)
    capsys.readouterr()
    assert kblocks.main(["--table", "--out", str(out)]) == 0
    assert "| kblocks |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        kblocks.main(["--shape", "48x500", "--segments", "2"])
    assert exc.value.code == 2


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")
def test_the_avx2_throughput_tool_builds_and_prints_each_line(tmp_path):
    """The ceilings of docs/cpu-kernels.md come from this tool: it builds with the command in its header, and where the CPU has
    AVX2 a short run (1000 iterations a timing) prints each instruction and each kernel's loop body with a
    positive rate (which tests/test_readme.py matches against the committed output)."""
    src = Path(__file__).resolve().parents[1] / "bench" / "kernels" / "cpu" / "vector_throughput_avx2.cpp"
    exe = tmp_path / "vt"
    header = src.read_text()
    assert "g++ -O2 -mavx2 -mfma -o /tmp/vector_throughput_avx2 bench/kernels/cpu/vector_throughput_avx2.cpp" in header
    subprocess.run(["g++", "-O2", "-mavx2", "-mfma", "-o", str(exe), str(src)], check=True)
    if not _ext.cpu_info().get("avx2"):
        pytest.skip("this CPU has no AVX2: built, not run")
    out = subprocess.run([str(exe), "3.1", "1000"], check=True, capture_output=True, text=True).stdout
    labels = re.findall(r'BENCH\("([^"]+)"', header)
    assert len(labels) == 26 and [line[:40].strip() for line in out.splitlines()] == labels
    kernels = re.findall(r"([\d.]+) cycles a step: +([\d.]+) GB/s", out)
    assert len(kernels) == 12 and all(float(c) > 0 and float(g) > 0 for c, g in kernels)
