"""The one-call GPU check, on a CPU: its helper scripts run from a plain checkout with no install, the
layout probe's CPU part (one-hot layouts, reference, file format, diagnosis of a wrong kernel), and the
script's own argument handling. The whole rehearsal (`bash scripts/gpu_check.sh --rehearse`) runs in
scripts/test.sh; here only its refusal of an incomplete run is checked."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def _probe():
    spec = importlib.util.spec_from_file_location("layout_probe", REPO / "scripts" / "layout_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bare_env() -> dict:
    """The GPU machine's situation: the interpreter's packages, but sparsekit not installed. `python -S`
    skips the .pth files (an editable install is one), PYTHONPATH gives back the site-packages folder."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
    return env


def test_without_the_bootstrap_sparsekit_is_not_importable_here(tmp_path):
    # the control for the next test: in this environment only the scripts' own bootstrap finds the package
    r = subprocess.run([sys.executable, "-S", "-c", "import torch, sparsekit"], cwd=tmp_path, env=_bare_env(),
                       capture_output=True, text=True)
    assert r.returncode != 0 and "No module named 'sparsekit'" in r.stderr


@pytest.mark.parametrize("script", ["bench/kernels/bench_packed_gemm.py", "bench/experiments/model_speed.py",
                                    "scripts/layout_probe.py"])
def test_helper_scripts_run_from_a_plain_checkout(script, tmp_path):
    r = subprocess.run([sys.executable, "-S", str(REPO / script), "--help"], cwd=tmp_path, env=_bare_env(),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage:")


def test_layout_probe_script_imports_sparsekit_from_its_tree(tmp_path):
    code = ("import runpy, sys; sys.argv = ['x', '--help']\n"
            "try:\n    runpy.run_path(sys.argv_path, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "import sparsekit; print(sparsekit.__file__)")
    code = code.replace("sys.argv_path", repr(str(REPO / "scripts" / "layout_probe.py")))
    r = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=_bare_env(), capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip().splitlines()[-1]).resolve() == REPO / "sparsekit" / "__init__.py"


# ------------------------------------------------------------------------------------ the layout probe

def test_probe_table_covers_every_row_and_kept_slot_with_all_six_patterns():
    lp = _probe()
    table = lp.probe_table()
    assert table.shape == (16 * 32, 4)
    assert table[:, 0].tolist() == [r for r in range(16) for _ in range(32)]
    assert table[:, 1].tolist() == list(range(32)) * 16
    idx = lp.mask_positions()
    assert {tuple(p) for p in idx.reshape(-1, 2).tolist()} == set(lp.PATTERNS)
    # every kept input of every row is probed exactly once
    for r in range(16):
        ks = table[table[:, 0] == r, 2].tolist()
        assert len(set(ks)) == 32 and all(k // 4 == s // 2 for s, k in enumerate(ks))


@pytest.mark.parametrize("kind", ["semi24_mma", "int4_semi24_mma"])
def test_probe_layouts_are_one_hot(kind):
    lp = _probe()
    layouts = lp.build_layouts(kind, torch.float16, torch.device("cpu"))
    table = lp.probe_table().tolist()
    for p in (0, 37, 511):
        w = layouts[p].unpack()
        r, _, k, code = table[p]
        assert int((w != 0).sum()) == 1 and float(w[r, k]) == pytest.approx(lp.weight_value(kind, r, k, code))


def test_probe_passes_the_reference_and_catches_a_permuted_kernel():
    lp = _probe()
    ref = lp.reference_kernel()
    cases, tensors = lp.run_cases(ref, torch.device("cpu"), dtypes=(torch.float16,), block_ms=())
    assert [(c["kind"], c["mode"]) for c in cases] == [(k, m) for k in lp.KINDS for m in ("identity", "ramp")]
    assert all(c["correct"] == c["probes"] == 512 and c["max_abs_err"] == 0 for c in cases)
    assert set(tensors) == {f"{k}/float16/{m}" for k in lp.KINDS for m in ("identity", "ramp")}

    # a kernel that writes output column n into n ^ 8 (rows g and g + 8 of an mma tile swapped)
    swap = torch.arange(16) ^ 8

    def wrong(x, layout, block_m):
        return ref(x, layout, block_m)[..., swap]

    cases, _ = lp.run_cases(wrong, torch.device("cpu"), dtypes=(torch.float16,), block_ms=(), kinds=("semi24_mma",))
    identity, ramp = cases
    assert identity["correct"] == 0 and ramp["correct"] == 0
    table = lp.probe_table().tolist()
    assert identity["landed_nk"] == [[r ^ 8, k] for r, _, k, _ in table]  # where each weight went
    first = identity["mismatches"][0]
    assert first["expected"] == {"n": 0, "k": table[0][2], "value": 1.0}
    assert first["found"] == [[8, table[0][2], 1.0]]
    assert ramp["mismatches"][0]["found"][0][:2] == [8, table[0][2]]  # k read back from the ramp's value


def test_probe_catches_a_wrong_int4_scale():
    lp = _probe()
    ref = lp.reference_kernel()

    def wrong_scale(x, layout, block_m):  # reads the scale of the other k group (group 32: 2 per row)
        twin = type(layout)(layout.shape, layout.codes, layout.meta, layout.scales.flip(1), layout.group_size)
        return ref(x, twin, block_m)

    cases, _ = lp.run_cases(wrong_scale, torch.device("cpu"), dtypes=(torch.float16,), block_ms=(),
                            kinds=("int4_semi24_mma",))
    assert all(c["correct"] == 0 for c in cases)
    r, _, k, code = lp.probe_table().tolist()[0]
    found = cases[0]["mismatches"][0]["found"][0]
    assert found[:2] == [r, k] and found[2] == pytest.approx(code * float(lp.int4_scales()[r, 1 - k // 32]))


def test_probe_keeps_earlier_results_when_a_kernel_breaks():
    """A kernel that fails (on a GPU: an illegal address poisons the context) ends the kernel runs, not the probe."""
    lp = _probe()
    ref = lp.reference_kernel()
    calls = []

    def dies_on_ramp(x, layout, block_m):
        calls.append(x.shape[0])
        if x.shape[0] == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")
        return ref(x, layout, block_m)

    seen = []
    cases, tensors = lp.run_cases(dies_on_ramp, torch.device("cpu"), dtypes=(torch.float16,), block_ms=(8,),
                                  on_case=lambda cases, tensors: seen.append(len(cases)))
    assert [(c["kind"], c["mode"], c["block_m"]) for c in cases] == [
        ("semi24_mma", "identity", None), ("semi24_mma", "ramp", None), ("int4_semi24_mma", "identity", None),
        ("int4_semi24_mma", "ramp", None), ("semi24_mma", "identity", 8), ("int4_semi24_mma", "identity", 8)]
    assert seen == [1, 2, 3, 4, 5, 6]  # saved after every case
    assert cases[0]["correct"] == 512
    assert cases[1]["error"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert all(c["error"].startswith("not run: an earlier case failed (semi24_mma/float16/ramp") for c in cases[2:])
    assert calls.count(1) == 1  # nothing ran after the failure
    assert tensors["semi24_mma/float16/identity"]["kernel"] is not None
    assert all(v["reference"] is not None for v in tensors.values())


def test_probe_script_writes_its_files_with_a_labelled_stand_in(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("checks the no-GPU path")
    lp = _probe()
    assert lp.main(["--out", str(tmp_path), "--stand-in", "--dtypes", "float16"]) == 0
    summary = json.loads((tmp_path / "layout_probe.json").read_text())
    assert summary["stand_in"] and summary["kernel_backend"] == "reference" and summary["ok"] is None
    assert summary["kernel_status"].startswith("stand-in: the reference backend")
    assert all(c["correct"] == 512 for c in summary["cases"])
    saved = torch.load(tmp_path / "layout_probe.pt", weights_only=True)  # plain data only
    out = saved["outputs"]["semi24_mma/float16/identity"]
    assert out["kernel"].shape == out["reference"].shape == (512, 64, 16) and torch.equal(out["kernel"], out["reference"])
    assert saved["probes"].shape == (512, 4) and saved["summary"] == summary

    # without --stand-in the kernels are marked as not run, the reference is still written
    assert lp.main(["--out", str(tmp_path / "bare"), "--dtypes", "float16"]) == 2
    summary = json.loads((tmp_path / "bare" / "layout_probe.json").read_text())
    assert summary["kernel_status"] == "not run: no CUDA device" and summary["kernel_backend"] is None
    assert all(c["correct"] is None for c in summary["cases"])
    saved = torch.load(tmp_path / "bare" / "layout_probe.pt", weights_only=True)
    assert all(v["kernel"] is None and v["reference"] is not None for v in saved["outputs"].values())


# ------------------------------------------------------------------------------------- the script itself

def test_gpu_check_script_parses_and_documents_itself():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    r = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--rehearse" in r.stdout and "python3" in r.stdout
    r = subprocess.run(["bash", str(SCRIPT), "--frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown option --frobnicate" in r.stderr
    text = SCRIPT.read_text()
    assert "python " not in text.replace("python3 ", "")  # the GPU machine has python3, not python


def test_gpu_check_writes_at_most_what_the_device_tool_brings_back():
    text = SCRIPT.read_text()
    files = text.split("OUT_FILES=(", 1)[1].split(")", 1)[0].split()
    assert len(files) <= 8 and all(f.replace(".", "").replace("_", "").isalnum() for f in files)


def test_rehearsal_fails_when_a_step_cannot_run(tmp_path):
    """A budget too small for any step: every step is skipped, and the rehearsal must say so (exit 1)."""
    env = {**os.environ, "GPU_CHECK_BUDGET": "5"}
    r = subprocess.run(["bash", str(SCRIPT), "--rehearse", str(tmp_path / "out")], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode != 0, r.stdout
    assert "REHEARSAL ERROR" in r.stdout and "step env: skipped" in r.stdout


def _compiler_env(cxx: str, path: str) -> dict:
    return {**os.environ, "CXX": cxx, "PATH": path}


@pytest.mark.skipif(not shutil.which("g++") or not shutil.which("ldd"), reason="needs g++ and ldd")
def test_build_refuses_a_compiler_that_links_libstdcxx_statically(tmp_path):
    """The GPU image's default g++ links libstdc++ into the extension, and then every error the extension
    raises kills the process (SIGSEGV) instead of raising RuntimeError: the build step must pass it over."""
    gxx = shutil.which("g++")
    static = tmp_path / "static" / "g++"
    static.parent.mkdir()
    static.write_text(f'#!/bin/sh\nexec {gxx} -static-libstdc++ "$@"\n')
    static.chmod(0o755)
    tools = os.pathsep.join(str(Path(shutil.which(t)).parent) for t in ("ldd", "mktemp", "dirname", "rm", "head"))
    # the static wrapper named by CXX: passed over, the g++ on PATH taken, with its gcc as nvcc's host compiler
    r = subprocess.run(["bash", str(SCRIPT), "--pick-compiler"], capture_output=True, text=True,
                       env=_compiler_env(str(static), f"{Path(gxx).parent}{os.pathsep}{tools}"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{static} links libstdc++ statically" in r.stdout and "C++ compiler: g++ (" in r.stdout
    # only static compilers to be found: the step fails, saying why
    r = subprocess.run(["bash", str(SCRIPT), "--pick-compiler"], capture_output=True, text=True,
                       env=_compiler_env(str(static), f"{static.parent}{os.pathsep}{tools}"))
    if Path("/usr/bin/g++").exists():  # the script's last resort, outside PATH: then it is taken
        assert r.returncode == 0 and "C++ compiler: /usr/bin/g++" in r.stdout, r.stdout
    else:
        assert r.returncode == 1 and "no C++ compiler here links libstdc++ dynamically" in r.stdout, r.stdout


# ------------------------------------------------------------------------- what a GPU call brought back

def _gpu_results():
    spec = importlib.util.spec_from_file_location("gpu_results", REPO / "scripts" / "gpu_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_lines(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_gpu_results_keeps_a_crashed_test_step_and_its_log(tmp_path):
    first, second = tmp_path / "1", tmp_path / "2"
    first.mkdir(), second.mkdir()
    env = {"record": "env", "device": "NVIDIA H200", "sms": 132, "torch": "2.11", "cuda": "13.0", "triton": "3.6",
           "date": "2026-12-04T01:50:00+00:00"}
    _write_lines(first / "steps.jsonl", [env, {"record": "step", "step": "cuda_tests", "status": "failed", "rc": 139,
                                               "seconds": 7, "note": ""}])
    (first / "gpu_check.log").write_text("== cuda_tests (timeout 90s, 69s elapsed)\n..Fatal Python error: Segmentation "
                                         "fault\n\nCurrent thread 0x1 (most recent call first):\n  File \"t.py\", line "
                                         "24 in test_bad\n== cuda_tests: failed (exit 139, 7s)\n")
    _write_lines(first / "tests.jsonl", [{"step": "cuda_tests", "nodeid": "t.py::test_ok", "outcome": "passed",
                                          "duration": 7.5}])
    _write_lines(first / "bench.jsonl", [
        {"record": "run", "copy_bandwidth_gbps": 4000.0, "date": "2026-12-04T01:52:00+00:00"},
        *({"record": "row", "shape": "s", "m": 1, "kernel": k, "ms": ms, "speedup_vs_dense": 0.02 / ms,
           "bw_fraction": 0.5} for k, ms in (("dense", 0.02), ("cuda_semi24", 0.01)))])
    _write_lines(second / "tests.jsonl", [{"step": "rerun", "nodeid": "t.py::test_ok", "outcome": "passed"},
                                          {"step": "rerun", "nodeid": "t.py::test_no", "outcome": "failed",
                                           "when": "call", "longrepr": "AssertionError"},
                                          {"step": "rerun", "exitstatus": 1}])
    out = tmp_path / "gpu" / "r.json"
    module = _gpu_results()
    assert module.main([str(first), "--also", str(second), "--note", "why", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["env"]["device"] == "NVIDIA H200" and data["notes"] == ["why"]
    crashed, rerun = data["tests"]["cuda_tests"], data["tests"]["rerun@2"]
    assert not crashed["session_ended"] and crashed["last_result"] == "t.py::test_ok"
    assert crashed["slowest"] == {"t.py::test_ok": 7.5}
    assert rerun["session_ended"] and rerun["outcomes"] == {"passed": 1, "failed": 1}
    assert rerun["failures"][0]["nodeid"] == "t.py::test_no"
    assert any("in test_bad" in line for line in data["steps"][0]["log_tail"])  # the frame that died
    printed = module.table(data)
    assert "| s | 1 | 0.0200 | 2.00x (0.50) |" in printed and "| rerun@2 | 1 | 1 | 0 | yes |" in printed


def test_gpu_results_model_speed_rows_name_their_call_and_tile_mode(tmp_path):
    """Two rows of one variant (the check's autotuned run, a later call's fixed tiles) must be told apart."""
    first, second = tmp_path / "1", tmp_path / "2"
    first.mkdir(), second.mkdir()
    _write_lines(first / "steps.jsonl", [{"record": "env", "device": "NVIDIA H200", "sms": 132, "torch": "2.11",
                                          "cuda": "13.0", "triton": "3.6", "date": "2026-12-04T17:39:00+00:00"}])
    row = {"weight_bytes": 2 ** 30, "prefill": {"tokens": 512, "median_ms": 8.5}, "decode": {"tokens_per_s": 201.0},
           "peak_mem_bytes": 2 ** 31, "joules_per_token": None}
    record = {"preset": "llama3-8b", "config": {"num_hidden_layers": 4}, "dtype": "bfloat16"}
    _write_lines(first / "model_speed.jsonl", [{"variant": "int4", **record, "triton_autotune": True,
                                                "rows": {"int4": row}}])
    (second / "ms").mkdir()
    (second / "ms" / "model_speed_llama3-8b_cuda.json").write_text(json.dumps(
        {**record, "triton_autotune": False, "rows": {"int4": {**row, "decode": {"tokens_per_s": 95.0}}}}))
    module = _gpu_results()
    out = tmp_path / "r.json"
    assert module.main([str(first), "--also", str(second), "--out", str(out)]) == 0
    printed = module.table(json.loads(out.read_text()))
    assert "| int4 | check | autotuned | 1.00 | 8.50 | 201.0 | 2.00 | - |" in printed
    assert "| int4 | 2 | fixed | 1.00 | 8.50 | 95.0 | 2.00 | - |" in printed


def test_gpu_results_refuses_a_folder_that_is_not_a_gpu_check_output(tmp_path, capsys):
    module = _gpu_results()
    assert module.main([str(tmp_path), "--out", str(tmp_path / "r.json")]) == 2
    assert "no env record" in capsys.readouterr().err and not (tmp_path / "r.json").exists()
    assert module.main([str(tmp_path / "missing")]) == 2
    assert module.main(["--table", str(tmp_path / "missing.json")]) == 2


def test_gpu_results_keeps_an_earlier_run_of_the_same_day(tmp_path):
    module = _gpu_results()
    first = module._default_out(tmp_path, "nvidia-h200", "2026-12-04T01:50:00+00:00", "2026-12-04T01:50:00+00:00")
    assert first.name == "nvidia-h200_2026-12-04.json"
    first.write_text(json.dumps({"env": {"date": "2026-12-04T01:50:00+00:00"}}))
    # the same run collected again replaces its own file; a later lease gets its own name
    assert module._default_out(tmp_path, "nvidia-h200", "2026-12-04T01:50:00+00:00",
                               "2026-12-04T01:50:00+00:00") == first
    later = module._default_out(tmp_path, "nvidia-h200", "2026-12-04T15:07:32+00:00", "2026-12-04T15:07:32+00:00")
    assert later.name == "nvidia-h200_2026-12-04T1507.json"
