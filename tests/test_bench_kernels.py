"""The GPU kernel benchmark: its weights carry the promised bits, and without a GPU it says where to run."""

import pytest
import torch

from tests.bench_scripts import load_script


def _bench():
    return load_script("bench_packed_gemm", "kernels")


def test_weights_have_the_stated_bits_per_weight():
    w = _bench().make_weights(256, 512, torch.float16, torch.device("cpu"), seed=0)
    bits = {k: w[k].bits_per_weight for k in ("semi24", "int4", "int4_semi24", "mxfp4")}
    assert bits == pytest.approx({"semi24": 9.0, "int4": 4.125, "int4_semi24": 3.125, "mxfp4": 4.25})
    assert float((w["dense"] != 0).float().mean()) > 0.999  # random weights: zeros are never timed


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_without_a_gpu_it_points_to_the_gpu_script(capsys):
    assert _bench().main(["--quick"]) == 2
    assert "scripts/gpu_check.sh" in capsys.readouterr().err


def test_kernels_filter_keeps_the_table_order_and_refuses_unknown_names():
    bench = _bench()
    assert bench.parse_kernels("cuda_semi24, dense,int4") == ["dense", "int4", "cuda_semi24"]
    assert bench.parse_kernels(None) == list(bench.KERNELS)
    with pytest.raises(ValueError, match="unknown kernel.*cuda_int8"):
        bench.parse_kernels("dense,cuda_int8")


def test_runners_build_only_the_selected_kernels():
    bench = _bench()
    w = bench.make_weights(64, 256, torch.float16, torch.device("cpu"), seed=0)
    assert list(bench.runners(w, torch.float16, ["int4", "dense", "mxfp4"])) == ["dense", "int4", "mxfp4"]


def test_check_runs_without_a_gpu_and_starts_the_jsonl(tmp_path, capsys):
    """--check: what scripts/gpu_check.sh --rehearse runs in place of the timing (no GPU)."""
    import json

    out = tmp_path / "sub" / "bench.jsonl"
    argv = ["--quick", "--check", "--kernels", "dense,cuda_semi24", "--ms", "1,16", "--jsonl", str(out)]
    assert _bench().main(argv) == 0
    (run,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert run["record"] == "run" and run["check"] and run["kernels"] == ["dense", "cuda_semi24"]
    assert run["ms"] == [1, 16] and len(run["shapes"]) == 2
    assert _bench().main(argv) == 0 and len(out.read_text().splitlines()) == 2  # appends, never truncates
    with pytest.raises(SystemExit):
        _bench().main(["--check", "--kernels", "nope"])
    assert "unknown kernel(s) nope" in capsys.readouterr().err


def test_row_writer_appends_one_line_per_record_as_it_comes(tmp_path):
    import json

    path = tmp_path / "rows.jsonl"
    writer = _bench().RowWriter(path)
    assert path.exists() and path.read_text() == ""  # created before the first measurement
    writer.write({"record": "row", "kernel": "dense", "ms": 0.1})
    assert json.loads(path.read_text()) == {"record": "row", "kernel": "dense", "ms": 0.1}
    writer.write({"record": "row", "kernel": "int4", "ms": 0.05})
    assert [json.loads(x)["kernel"] for x in path.read_text().splitlines()] == ["dense", "int4"]
