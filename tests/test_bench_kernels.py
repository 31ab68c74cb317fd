"""The GPU kernel benchmark: its weights carry the promised bits, and without a GPU it says where to run."""

import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_packed_gemm", REPO / "bench" / "kernels" / "bench_packed_gemm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_weights_have_the_stated_bits_per_weight():
    w = _bench().make_weights(256, 512, torch.float16, torch.device("cpu"), seed=0)
    bits = {k: w[k].bits_per_weight for k in ("semi24", "int4", "int4_semi24", "mxfp4")}
    assert bits == pytest.approx({"semi24": 9.0, "int4": 4.125, "int4_semi24": 3.125, "mxfp4": 4.25})
    assert float((w["dense"] != 0).float().mean()) > 0.999  # random weights: zeros are never timed


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_without_a_gpu_it_points_to_the_gpu_script(capsys):
    assert _bench().main(["--quick"]) == 2
    assert "scripts/gpu_check.sh" in capsys.readouterr().err
