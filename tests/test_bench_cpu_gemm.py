"""bench/kernels/bench_cpu_gemm.py: a forced SIMD path is timed, checked and recorded; a bad one is exit 2."""

import json

import pytest

from sparsekit import _ext
from tests.bench_scripts import load_script


def _bench():
    return load_script("bench_cpu_gemm", "kernels")


@pytest.mark.skipif(not _ext.cpu_info().get("avx2"), reason="needs the AVX2 path of sparsekit._cpu")
def test_a_forced_avx2_run_records_its_path_and_checks_every_row(tmp_path):
    out = tmp_path / "gemm.json"
    assert _bench().main(["--shapes", "smollm2", "--quick", "--ms", "1,17", "--threads", "1", "--kernels",
                          "fp32,int4,mxfp4", "--path", "avx2", "--budget", "0.05", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["path"] == "avx2" and data["avx2_path"]
    packed = [r for r in data["rows"] if r["kernel"] != "fp32"]
    assert {r["m"] for r in packed} == {1, 17} and all(r["rel_err"] < 1e-5 for r in packed)


def test_a_path_this_cpu_lacks_or_an_unknown_one_is_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _bench().main(["--path", "neon", "--out", str(tmp_path / "x.json")])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
    missing = [p for p in ("avx512", "avx2") if not _ext.cpu_info().get(p)]
    if missing:
        assert _bench().main(["--path", missing[0], "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_in_cache_times_one_copy_of_each_weight(tmp_path):
    out = tmp_path / "gemm.json"
    args = ["--shapes", "smollm2", "--quick", "--ms", "1", "--threads", "1", "--kernels", "fp32,int4", "--budget",
            "0.05", "--out", str(out)]
    assert _bench().main([*args, "--in-cache"]) == 0
    data = json.loads(out.read_text())
    assert data["in_cache"] and {r["weight_copies"] for r in data["rows"]} == {1}
    assert _bench().main(args) == 0  # the default rotates copies past the cache (several for these small weights)
    data = json.loads(out.read_text())
    assert not data["in_cache"] and min(r["weight_copies"] for r in data["rows"]) > 1
