"""pytest-benchmark wrappers of the packed GEMM kernels for CI-style runs on GPU runners:

    python -m pytest tests/ops/test_packed_gemm_benchmark.py --benchmark-only --benchmark-json=out.json

One Llama-3-8B layer shape (4096 x 14336, the MLP down projection) at decode (M = 1) and prefill
(M = 2048) sizes, each kernel next to cuBLAS dense. Skipped without a GPU; the full grid with roofline
numbers is `bench/kernels/bench_packed_gemm.py`.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

KERNELS = ["dense", "semi24", "int4", "int4_semi24", "mxfp4"]


def _bench_module():
    path = Path(__file__).resolve().parents[2] / "bench" / "kernels" / "bench_packed_gemm.py"
    spec = importlib.util.spec_from_file_location("bench_packed_gemm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runners():
    bench = _bench_module()
    weights = bench.make_weights(4096, 14336, torch.float16, torch.device("cuda"), seed=0)
    return bench.runners(weights, torch.float16)


@pytest.mark.gpu
@pytest.mark.triton
@pytest.mark.parametrize("m", [1, 2048])
@pytest.mark.parametrize("kernel", KERNELS)
def test_packed_gemm_speed(benchmark, runners, kernel, m):
    fn, _ = runners[kernel]
    x = torch.randn(m, 14336, device="cuda", dtype=torch.float16)
    fn(x)  # compile / autotune outside the timed region

    def run():
        fn(x)
        torch.cuda.synchronize()

    benchmark(run)
