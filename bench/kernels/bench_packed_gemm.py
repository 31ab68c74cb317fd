"""Packed GEMM kernels vs cuBLAS dense, cuSPARSELt 2:4 and torch's int4 kernel, on Llama layer shapes.

    python bench/kernels/bench_packed_gemm.py                        # full grid, JSON under bench/results/kernels/
    python bench/kernels/bench_packed_gemm.py --quick                # 2 shapes x M in {1, 16, 2048}
    python bench/kernels/bench_packed_gemm.py --dtype bfloat16 --out /tmp/k.json
    python bench/kernels/bench_packed_gemm.py --quick --kernels dense,cuda_semi24 --jsonl rows.jsonl
    python bench/kernels/bench_packed_gemm.py --quick --check       # no GPU: imports, arguments, outputs

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

`--kernels` measures only the named kernels (in the order of KERNELS; `dense` first when named, the
speedups need it). `--jsonl FILE` appends one JSON line per measured row as it is measured (first a
`"record": "run"` line with device, versions and command), so a run stopped half-way keeps what it
measured; with `--jsonl` and no `--out` the whole-run JSON is not written. `--check` runs on any
machine: it parses the arguments, imports what a GPU run imports, packs small weights for the
selected kernels on the CPU and writes the output files' first line, then exits 0 (the rehearsal of
`bash scripts/gpu_check.sh --rehearse`). Runs from a plain checkout, with no install.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path and (ROOT / "sparsekit").is_dir():  # a plain checkout: no install needed
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def runners(weights: dict, dtype: torch.dtype, kernels=KERNELS) -> dict:
    """kernel name -> (fn(x) -> out, weight bytes) for those of `kernels` this build can run, in KERNELS order."""
    from sparsekit.ops.packed_linear import packed_linear

    want = set(kernels)
    out = {}
    if "dense" in want:
        out["dense"] = (lambda x: torch.matmul(x, weights["dense"].t()), weights["dense"].numel() * 2)
    if "cusparselt_24" in want:
        try:
            from torch.sparse import to_sparse_semi_structured

            sp = to_sparse_semi_structured(weights["w24"])
            out["cusparselt_24"] = (lambda x: torch.mm(sp, x.t()).t(), weights["semi24"].nbytes)
        except Exception as exc:  # noqa: BLE001 - a baseline this build lacks is reported, not fatal
            print(f"cusparselt_24 unavailable: {_first_line(exc)}", file=sys.stderr)
    if "torch_int4" in want and hasattr(torch, "_weight_int4pack_mm") and dtype == torch.bfloat16:
        try:
            n, k = weights["dense"].shape
            wq = torch.randint(0, 16, (n, k // 2), dtype=torch.uint8, device=weights["dense"].device)
            packed = torch._convert_weight_to_int4pack(wq, 8)
            sz = torch.rand(k // 128, n, 2, dtype=dtype, device=wq.device) + 0.5
            out["torch_int4"] = (lambda x: torch._weight_int4pack_mm(x, packed, 128, sz), weights["int4"].nbytes)
        except Exception as exc:  # noqa: BLE001
            print(f"torch_int4 unavailable: {_first_line(exc)}", file=sys.stderr)
    for kind in [k for k in ("semi24", "int4", "int4_semi24", "mxfp4") if k in want]:
        layout = weights[kind]
        out[kind] = ((lambda lay: lambda x: packed_linear(x, lay, backend="triton"))(layout), layout.nbytes)
    cuda = [k for k in ("cuda_semi24", "cuda_int4_semi24") if k in want]
    if cuda:
        from sparsekit import _ext

        if _ext.available():
            for kind in cuda:
                layout = weights[kind]
                out[kind] = ((lambda lay: lambda x: packed_linear(x, lay, backend="cuda"))(layout), layout.nbytes)
        else:
            print("sparsekit._C not built: CUDA kernels not timed", file=sys.stderr)
    return {k: out[k] for k in KERNELS if k in out}


def parse_kernels(text: str | None) -> list[str]:
    """`--kernels a,b` -> the named kernels in KERNELS order (all of them when empty)."""
    names = [k.strip() for k in (text or "").split(",") if k.strip()]
    unknown = [k for k in names if k not in KERNELS]
    if unknown:
        raise ValueError(f"unknown kernel(s) {', '.join(unknown)}; choose from {', '.join(KERNELS)}")
    return [k for k in KERNELS if k in names] if names else list(KERNELS)


class RowWriter:
    """Appends one JSON line per record to `path` (if any) as soon as it is known, flushed."""

    def __init__(self, path: Path | None):
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    def write(self, record: dict) -> None:
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    p.add_argument("--quick", action="store_true", help="two shapes, M in {1, 16, 2048}")
    p.add_argument("--ms", default=None, help="comma list of M (default: 1..2048)")
    p.add_argument("--kernels", default=None, help=f"comma list, a subset of {','.join(KERNELS)} [all]")
    p.add_argument("--jsonl", type=Path, default=None, help="append one JSON line per row as it is measured")
    p.add_argument("--out", type=Path, default=None, help="the whole-run JSON [bench/results/kernels/...; "
                                                           "not written with --jsonl alone]")
    p.add_argument("--check", action="store_true", help="no GPU needed: check imports, arguments and outputs, "
                                                        "then exit")
    return p


def _plan(args, p: argparse.ArgumentParser) -> tuple[list, list[int], list[str]]:
    try:
        kernels = parse_kernels(args.kernels)
        ms = [int(m) for m in args.ms.split(",")] if args.ms else ([1, 16, 2048] if args.quick else MS)
    except ValueError as exc:
        p.error(str(exc))
    if any(m < 1 for m in ms):
        p.error(f"--ms must be positive integers, got {args.ms}")
    shapes = SHAPES[:1] + SHAPES[3:4] if args.quick else SHAPES
    return shapes, ms, kernels


def check(args, shapes, ms, kernels, argv) -> int:
    """--check: everything a GPU run does before its first timing, on the CPU (no GPU, no Triton launch)."""
    import triton.testing  # noqa: F401 - the timer a GPU run uses

    from sparsekit.ops.packed_linear import packed_linear_reference
    from sparsekit.utils.env import versions

    dtype = getattr(torch, args.dtype)
    weights = make_weights(64, 256, dtype, torch.device("cpu"), seed=0)
    fns = runners(weights, dtype, kernels)  # builds every runner (calls none but dense: no GPU here)
    x = torch.randn(2, 256, dtype=dtype)
    if "dense" in fns:
        assert fns["dense"][0](x).shape == (2, 64)
    for name in [k for k in kernels if k in PACKED]:
        assert packed_linear_reference(x, weights[name]).shape == (2, 64)
    rows = RowWriter(args.jsonl)
    rows.write({"record": "run", "check": True, "device": None, "dtype": args.dtype, "kernels": kernels,
                "shapes": [list(s) for s in shapes], "ms": ms, "versions": versions(),
                "command": "python3 bench/kernels/bench_packed_gemm.py " + shlex.join(argv)})
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"check": True, "kernels": kernels, "rows": []}) + "\n")
    print(f"check ok: would time {', '.join(kernels)} on {len(shapes)} shape(s) x M in {ms}"
          f"{' -> ' + str(args.jsonl) if args.jsonl else ''}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = _parser()
    args = p.parse_args(argv)
    shapes, ms, kernels = _plan(args, p)
    if args.check:
        return check(args, shapes, ms, kernels, argv)
    if not torch.cuda.is_available():
        print("bench_packed_gemm needs a CUDA GPU; run it on the GPU machine: bash scripts/gpu_check.sh "
              "(--check tests the set-up without one)", file=sys.stderr)
        return 2
    import triton
    import triton.testing

    from sparsekit.ops.packed_linear import packed_linear_reference
    from sparsekit.utils.env import versions

    device = torch.device("cuda")
    dtype = getattr(torch, args.dtype)
    bw = copy_bandwidth(device)
    command = "python3 bench/kernels/bench_packed_gemm.py " + shlex.join(argv)
    run = {"device": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0)),
           "dtype": args.dtype, "copy_bandwidth_gbps": bw, "versions": {**versions(), "triton": triton.__version__},
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command}
    writer = RowWriter(args.jsonl)
    writer.write({"record": "run", **run, "kernels": kernels})
    rows = []

    def emit(row: dict) -> None:
        rows.append(row)
        writer.write({"record": "row", **row})
        if "error" in row:
            print(f"{row['shape']:<22}{row['m']:>5}  {row['kernel']:<18} error: {row['error']}", flush=True)
        else:
            speed = row["speedup_vs_dense"]
            print(f"{row['shape']:<22}{row['m']:>5}  {row['kernel']:<18}{row['ms']:10.4f} ms {row['tflops']:8.1f} TFLOP/s"
                  f" {row['bw_fraction']:6.2f} of copy BW  x{speed if speed else float('nan'):.2f} dense"
                  f"  err {row['rel_err'] if row['rel_err'] is not None else '-'}", flush=True)

    for si, (label, n, k) in enumerate(shapes):
        weights = make_weights(n, k, dtype, device, seed=si)
        fns = runners(weights, dtype, kernels)
        for m in ms:
            xs = [torch.randn(m, k, device=device, dtype=dtype) for _ in range(8)]  # rotated inputs
            dense_ms = None
            for name, (fn, wbytes) in fns.items():
                try:
                    out = fn(xs[0])
                except Exception as exc:  # noqa: BLE001 - e.g. a baseline that rejects this M: recorded, not fatal
                    emit({"shape": label, "n": n, "k": k, "m": m, "kernel": name, "error": _first_line(exc)})
                    continue
                err, ok = None, None
                if name in PACKED:
                    ref = packed_linear_reference(xs[0], weights[name])
                    err = float((out.float() - ref.float()).norm() / ref.float().norm())
                    ok = bool(torch.isfinite(out).all()) and err <= (1e-3 if dtype == torch.float16 else 1e-2)
                    if not ok:
                        print(f"WRONG {name} {label} M={m}: rel err {err}", file=sys.stderr)
                i = [0]

                def step():
                    i[0] = (i[0] + 1) % len(xs)
                    return fn(xs[i[0]])

                t = triton.testing.do_bench(step, warmup=25, rep=100, return_mode="median")
                moved = wbytes + m * k * 2 + m * n * 2
                row = {"shape": label, "n": n, "k": k, "m": m, "kernel": name, "ms": t,
                       "tflops": 2 * m * n * k / (t * 1e-3) / 1e12, "gbps": moved / (t * 1e-3) / 1e9,
                       "bw_fraction": moved / (t * 1e-3) / 1e9 / bw, "weight_bytes": wbytes, "rel_err": err,
                       "correct": ok}
                if name == "dense":
                    dense_ms = t
                row["speedup_vs_dense"] = dense_ms / t if dense_ms else None
                emit(row)
        del weights, fns
        torch.cuda.empty_cache()
    result = {**run, "rows": rows}
    if args.out is not None or args.jsonl is None:
        name = result["device"].replace(" ", "_").lower()
        out_path = args.out or ROOT / "bench" / "results" / "kernels" / f"packed_gemm_{name}_{args.dtype}.json"
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"-> {out_path}")
    print(f"copy bandwidth {bw:.0f} GB/s; speedup vs cuBLAS dense ({args.dtype}), M <= 16:")
    timed = [k for k in KERNELS if k != "dense" and any(r["kernel"] == k for r in rows)]
    print(f"{'shape':<22}{'M':>5}  " + "".join(f"{k:>14}" for k in timed))
    for label, n, k in shapes:
        for m in [m for m in ms if m <= 16]:
            cells = {r["kernel"]: r.get("speedup_vs_dense") for r in rows
                     if r["shape"] == label and r["m"] == m and "error" not in r}
            print(f"{label:<22}{m:>5}  " + "".join(f"{(cells.get(c) or float('nan')):>14.2f}" for c in timed))
    if args.jsonl is not None:
        print(f"-> {args.jsonl}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
