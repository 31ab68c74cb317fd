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
def bench():
    return _bench_module()


@pytest.fixture(scope="module")
def weights(bench):
    return bench.make_weights(4096, 14336, torch.float16, torch.device("cuda"), seed=0)


@pytest.fixture(scope="module")
def runners(bench, weights):
    return bench.runners(weights, torch.float16)


def reference(x, weights, kernel):
    """What `kernel` must compute: the unpacked weight in an fp32 matmul (dense: the fp16 weight itself)."""
    from sparsekit.ops.packed_linear import packed_linear_reference

    if kernel == "dense":
        return (x.float() @ weights["dense"].float().t()).to(x.dtype)
    return packed_linear_reference(x, weights[kernel])


def rel_err(out, ref):
    return float((out.float() - ref.float()).norm() / ref.float().norm())


@pytest.mark.gpu
@pytest.mark.triton
@pytest.mark.parametrize("m", [1, 2048])
@pytest.mark.parametrize("kernel", KERNELS)
def test_packed_gemm_speed(benchmark, weights, runners, kernel, m):
    fn, _ = runners[kernel]
    x = torch.randn(m, 14336, device="cuda", dtype=torch.float16)
    out = fn(x)  # also compiles / autotunes outside the timed region
    # A fast wrong kernel is worthless: same bar as bench/kernels/bench_packed_gemm.py (fp16: 1e-3).
    assert out.shape == (m, 4096) and bool(torch.isfinite(out).all())
    assert rel_err(out, reference(x, weights, kernel)) < 1e-3

    def run():
        fn(x)
        torch.cuda.synchronize()

    benchmark(run)
