"""Packed GEMM kernels vs cuBLAS dense, cuSPARSELt 2:4 and torch's int4 kernel, on Llama layer shapes.

    python bench/kernels/bench_packed_gemm.py                        # full grid, JSON under bench/results/kernels/
    python bench/kernels/bench_packed_gemm.py --quick                # 2 shapes x M in {1, 16, 2048}
    python bench/kernels/bench_packed_gemm.py --dtype bfloat16 --out /tmp/k.json

Needs a CUDA GPU (run it on a lent machine through `bash scripts/gpu_check.sh`). For every weight
shape (N x K: Llama-3-8B 4096x4096, 1024x4096 [k/v], 14336x4096 [gate/up], 4096x14336 [down];
Llama-2-70B 8192x8192, 28672x8192, 8192x28672) and every M, with random weights (never zeros):

- correctness first: every kernel's output against the reference (`packed_linear_reference`) on the
  same inputs, relative error recorded (and the row refused if above 1e-3 for fp16);
- time: `triton.testing.do_bench` median (ms) with warm-up, over a rotation of input buffers so the
  activations do not stay in L2 (the weights of one layer, 8 to 470 MB, do not fit in L2 anyway);
- derived: TFLOP/s (2*M*N*K over the time: the dense-equivalent FLOPs), GB/s of the bytes that must
  move (weights in their stored form + activations + output), that over the measured copy bandwidth
  (a large device-to-device copy, measured once), and the speedup over cuBLAS dense fp16/bf16.

Backends: `dense` (torch.matmul, cuBLAS), `cusparselt_24` (torch.sparse.to_sparse_semi_structured),
`torch_int4` (torch._weight_int4pack_mm where the build has it), sparsekit's Triton kernels
`semi24`, `int4`, `int4_semi24`, `mxfp4`, and its CUDA kernels on the sparse tensor cores
(`cuda_semi24`, `cuda_int4_semi24`: csrc/sparse24_gemm.cu, when sparsekit._C is built). Writes one
JSON (device, versions, date, command, copy bandwidth, rows) and prints a table of decode speedups.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SHAPES = [("llama3-8b q/o", 4096, 4096), ("llama3-8b k/v", 1024, 4096), ("llama3-8b gate/up", 14336, 4096),
          ("llama3-8b down", 4096, 14336), ("llama2-70b q/o", 8192, 8192), ("llama2-70b gate/up", 28672, 8192),
          ("llama2-70b down", 8192, 28672)]
MS = [1, 2, 4, 8, 16, 32, 64, 128, 512, 2048]
KERNELS = ("dense", "cusparselt_24", "torch_int4", "semi24", "int4", "int4_semi24", "mxfp4", "cuda_semi24",
           "cuda_int4_semi24")
PACKED = ("semi24", "int4", "int4_semi24", "mxfp4", "cuda_semi24", "cuda_int4_semi24")


def copy_bandwidth(device: torch.device) -> float:
    """Measured device-to-device copy rate in GB/s (bytes read + bytes written)."""
    import triton.testing

    src = torch.randn(256 * 2 ** 20 // 4, device=device)
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=50, rep=200, return_mode="median")
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def make_weights(n: int, k: int, dtype: torch.dtype, device: torch.device, seed: int) -> dict:
    """Random weights in every layout (packed on the device), plus the dense 2:4 weight for cuSPARSELt."""
    from sparsekit.pack import MXFP4, Int4, Int4Semi24, Semi24, to_mma
    from sparsekit.prune.patterns import nm_mask
    from sparsekit.quant import IntFormat, get_format

    g = torch.Generator(device=device).manual_seed(seed)
    w = torch.randn(n, k, device=device, generator=g) * 0.02
    mask = nm_mask(torch.rand(n, k, device=device, generator=g), 2, 4)
    w24 = w.masked_fill(~mask, 0)
    int4 = IntFormat(4, 128)
    out = {"dense": w.to(dtype), "w24": w24.to(dtype), "semi24": Semi24.pack(w24.to(dtype), mask),
           "int4": Int4.pack(int4.quantize(w)), "int4_semi24": Int4Semi24.pack(int4.quantize(w24, mask), mask),
           "mxfp4": MXFP4.pack(get_format("mxfp4").quantize(w))}
    out["cuda_semi24"], out["cuda_int4_semi24"] = to_mma(out["semi24"]), to_mma(out["int4_semi24"])
    return out


def runners(weights: dict, dtype: torch.dtype) -> dict:
    """kernel name -> (fn(x) -> out, weight bytes) for the kernels this build can run."""
    from sparsekit.ops.packed_linear import packed_linear

    out = {"dense": (lambda x: torch.matmul(x, weights["dense"].t()), weights["dense"].numel() * 2)}
    try:
        from torch.sparse import to_sparse_semi_structured

        sp = to_sparse_semi_structured(weights["w24"])
        out["cusparselt_24"] = (lambda x: torch.mm(sp, x.t()).t(), weights["semi24"].nbytes)
    except Exception as exc:  # noqa: BLE001 - a baseline this build lacks is reported, not fatal
        print(f"cusparselt_24 unavailable: {exc}", file=sys.stderr)
    if hasattr(torch, "_weight_int4pack_mm") and dtype == torch.bfloat16:
        try:
            n, k = weights["dense"].shape
            wq = torch.randint(0, 16, (n, k // 2), dtype=torch.uint8, device=weights["dense"].device)
            packed = torch._convert_weight_to_int4pack(wq, 8)
            sz = torch.rand(k // 128, n, 2, dtype=dtype, device=wq.device) + 0.5
            out["torch_int4"] = (lambda x: torch._weight_int4pack_mm(x, packed, 128, sz), weights["int4"].nbytes)
        except Exception as exc:  # noqa: BLE001
            print(f"torch_int4 unavailable: {exc}", file=sys.stderr)
    for kind in ("semi24", "int4", "int4_semi24", "mxfp4"):
        layout = weights[kind]
        out[kind] = ((lambda lay: lambda x: packed_linear(x, lay, backend="triton"))(layout), layout.nbytes)
    from sparsekit import _ext

    if _ext.available():
        for kind in ("cuda_semi24", "cuda_int4_semi24"):
            layout = weights[kind]
            out[kind] = ((lambda lay: lambda x: packed_linear(x, lay, backend="cuda"))(layout), layout.nbytes)
    else:
        print("sparsekit._C not built: CUDA kernels not timed", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    p.add_argument("--quick", action="store_true", help="two shapes, M in {1, 16, 2048}")
    p.add_argument("--ms", default=None, help="comma list of M (default: 1..2048)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_packed_gemm needs a CUDA GPU; run it on the GPU machine: bash scripts/gpu_check.sh",
              file=sys.stderr)
        return 2
    import triton
    import triton.testing

    from sparsekit.ops.packed_linear import packed_linear_reference
    from sparsekit.utils.env import versions

    device = torch.device("cuda")
    dtype = getattr(torch, args.dtype)
    shapes = SHAPES[:1] + SHAPES[3:4] if args.quick else SHAPES
    ms = [int(m) for m in args.ms.split(",")] if args.ms else ([1, 16, 2048] if args.quick else MS)
    bw = copy_bandwidth(device)
    rows = []
    for si, (label, n, k) in enumerate(shapes):
        weights = make_weights(n, k, dtype, device, seed=si)
        fns = runners(weights, dtype)
        for m in ms:
            xs = [torch.randn(m, k, device=device, dtype=dtype) for _ in range(8)]  # rotated inputs
            dense_ms = None
            for name, (fn, wbytes) in fns.items():
                try:
                    out = fn(xs[0])
                except Exception as exc:  # noqa: BLE001 - e.g. a baseline that rejects this M: recorded, not fatal
                    rows.append({"shape": label, "n": n, "k": k, "m": m, "kernel": name, "error": str(exc)[:200]})
                    continue
                err = None
                if name in PACKED:
                    ref = packed_linear_reference(xs[0], weights[name])
                    err = float((out.float() - ref.float()).norm() / ref.float().norm())
                    if not torch.isfinite(out).all() or err > (1e-3 if dtype == torch.float16 else 1e-2):
                        print(f"WRONG {name} {label} M={m}: rel err {err}", file=sys.stderr)
                i = [0]

                def step():
                    i[0] = (i[0] + 1) % len(xs)
                    return fn(xs[i[0]])

                t = triton.testing.do_bench(step, warmup=25, rep=100, return_mode="median")
                moved = wbytes + m * k * 2 + m * n * 2
                row = {"shape": label, "n": n, "k": k, "m": m, "kernel": name, "ms": t,
                       "tflops": 2 * m * n * k / (t * 1e-3) / 1e12, "gbps": moved / (t * 1e-3) / 1e9,
                       "bw_fraction": moved / (t * 1e-3) / 1e9 / bw, "weight_bytes": wbytes, "rel_err": err}
                if name == "dense":
                    dense_ms = t
                row["speedup_vs_dense"] = dense_ms / t if dense_ms else None
                rows.append(row)
    result = {"device": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0)),
              "dtype": args.dtype, "copy_bandwidth_gbps": bw, "versions": {**versions(), "triton": triton.__version__},
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": "python bench/kernels/bench_packed_gemm.py " + shlex.join(argv), "rows": rows}
    name = result["device"].replace(" ", "_").lower()
    out_path = args.out or ROOT / "bench" / "results" / "kernels" / f"packed_gemm_{name}_{args.dtype}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"copy bandwidth {bw:.0f} GB/s; speedup vs cuBLAS dense ({args.dtype}), M <= 16:")
    kernels = [k for k in KERNELS if any(r["kernel"] == k for r in rows)][1:]
    print(f"{'shape':<22}{'M':>5}  " + "".join(f"{k:>14}" for k in kernels))
    for label, n, k in shapes:
        for m in [m for m in ms if m <= 16]:
            cells = {r["kernel"]: r["speedup_vs_dense"] for r in rows
                     if r["shape"] == label and r["m"] == m and "error" not in r}
            print(f"{label:<22}{m:>5}  " + "".join(f"{cells.get(c, float('nan')):>14.2f}" for c in kernels))
    print(f"-> {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
