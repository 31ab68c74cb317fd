"""bench/kernels/ab_builds.py: two checkouts timed in alternating processes on the same weights; bad input is exit 2."""

import json

import pytest

from sparsekit import _ext
from tests.bench_scripts import REPO, load_script

needs_ext = pytest.mark.skipif(not _ext.cpu_available(), reason="sparsekit._cpu not built")


def _ab():
    return load_script("ab_builds", "kernels")


def _measured(tmp_path, *args: str) -> dict:
    """ab_builds on this checkout against itself, 64 x 256 int8-activation weights, two short rounds: its JSON."""
    out = tmp_path / "ab.json"
    assert _ab().main(["--base", str(REPO), "--acts", "int8", "--shape", "64x256", "--rounds", "2", "--seconds", "0.05",
                       *args, "--out", str(out)]) == 0
    return json.loads(out.read_text())


@needs_ext
def test_a_checkout_against_itself_records_both_builds_on_the_same_weights(tmp_path):
    data = _measured(tmp_path, "--layout", "int4_semi24", "--copies", "2", "--base-prefetch", "l1:2048")
    assert (data["builds"]["base"]["prefetch"], data["builds"]["new"]["prefetch"]) == ("l1:2048", None)
    assert data["layout"] == "int4_semi24" and (data["n"], data["k"], data["copies"]) == (64, 256, 2)
    assert data["builds"]["base"]["tree"] == data["builds"]["new"]["tree"] == str(REPO.resolve())
    for build in data["builds"].values():
        assert len(build["turns_ms"]) == 2 and 0 < build["p10_ms"] <= build["ms"]
        assert build["best_turn_ms"] == min(build["turns_ms"])
    # int4 g128 + 2:4: 64 rows x (256 / 4 code bytes + 256 / 8 position bytes + 2 fp16 scales)
    assert data["weight_bytes"] == 64 * (64 + 32 + 4)
    for key in ("ms", "p10_ms", "best_turn_ms"):
        assert data["change"][key] == pytest.approx(data["builds"]["new"][key] / data["builds"]["base"][key] - 1)


@needs_ext
def test_two_layouts_of_one_build_on_the_same_weights(tmp_path):
    data = _measured(tmp_path, "--base-layout", "int4", "--layout", "int4_semi24", "--copies", "1")
    assert (data["base_layout"], data["layout"]) == ("int4", "int4_semi24")
    base, new = data["builds"]["base"], data["builds"]["new"]
    assert (base["layout"], new["layout"]) == ("int4", "int4_semi24")
    # int4 g128: 64 rows x (128 code bytes + 2 fp16 scales); + 2:4: 64 x (64 + 32 + 4)
    assert (base["weight_bytes"], new["weight_bytes"]) == (64 * (128 + 4), 64 * (64 + 32 + 4))


@needs_ext
def test_dense_fp32_through_sparsekit_gemv_against_torch(tmp_path):
    data = _measured(tmp_path, "--base-layout", "fp32", "--layout", "fp32_gemv", "--acts", "float", "--copies", "1")
    base, new = data["builds"]["base"], data["builds"]["new"]
    assert (base["layout"], new["layout"]) == ("fp32", "fp32_gemv")
    assert base["weight_bytes"] == new["weight_bytes"] == 64 * 256 * 4 and new["p10_ms"] > 0


@needs_ext
def test_dense_bf16_through_sparsekit_gemv_against_torch(tmp_path):
    data = _measured(tmp_path, "--base-layout", "bf16", "--layout", "bf16_gemv", "--acts", "bf16", "--copies", "1")
    base, new = data["builds"]["base"], data["builds"]["new"]
    assert (base["layout"], new["layout"]) == ("bf16", "bf16_gemv")
    assert base["weight_bytes"] == new["weight_bytes"] == 64 * 256 * 2 and new["p10_ms"] > 0


@needs_ext
def test_bf16_activations_into_the_exact_kernels(tmp_path):
    # a bf16 model's activations (the exact kernels take them; int8 is the a8 variant's)
    data = _measured(tmp_path, "--layout", "int4", "--acts", "bf16", "--copies", "1")
    assert data["acts"] == "bf16" and data["builds"]["new"]["p10_ms"] > 0


def test_bad_input_is_exit_2_naming_the_constraint(tmp_path, capsys):
    assert _ab().main(["--base", str(tmp_path), "--shape", "64x100"]) == 2
    err = capsys.readouterr().err
    assert "not a sparsekit checkout" in err and "K = 100 must be a multiple of 32" in err
    assert _ab().main(["--base", str(REPO), "--layout", "semi24", "--acts", "int8", "--shape", "4x128"]) == 2
    assert "int4, int4_semi24, mxfp4 and int8 only" in capsys.readouterr().err
    assert _ab().main(["--base", str(REPO), "--base-layout", "semi24", "--acts", "int8", "--shape", "4x128"]) == 2
    assert "int4, int4_semi24, mxfp4 and int8 only, not semi24" in capsys.readouterr().err
    assert _ab().main(["--base", str(REPO), "--new-prefetch", "l2:100", "--shape", "4x128"]) == 2
    assert "--new-prefetch 'l2:100' must be l1:BYTES or l2:BYTES" in capsys.readouterr().err
    assert _ab().main(["--base", str(REPO), "--layout", "fp32_gemv", "--acts", "bf16", "--shape", "4x128"]) == 2
    assert "fp32_gemv takes fp32 activations only: --acts float" in capsys.readouterr().err
    assert _ab().main(["--base", str(REPO), "--base-layout", "bf16", "--acts", "float", "--shape", "4x128"]) == 2
    assert "bf16 takes bf16 activations only: --acts bf16" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written
