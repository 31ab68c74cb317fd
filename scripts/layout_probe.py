"""Layout probe: one-hot 2:4 weights through the CUDA mma.sp kernels, kernel output and reference side by side.

    python3 scripts/layout_probe.py --out DIR               # on the GPU (scripts/gpu_check.sh runs it)
    python3 scripts/layout_probe.py --out DIR --stand-in    # no GPU: the reference stands in for the kernels

One 16 x 64 weight tile (out_features x in_features: one mma row tile, the kernels' smallest K). Its
2:4 mask is fixed and uses all six position pairs: row r, group of 4 inputs g keeps the pair
PATTERNS[(r + g) % 6]. For each row r and kept slot s (0..31: the s-th stored value of the row, group
s // 2) the weight holds one non-zero, at input k = 4 (s // 2) + PATTERNS[...][s % 2]; every other kept
value is an exact zero. Each such weight goes through each CUDA kernel (`Semi24MMA`, fp16/bf16
values 1.0; `Int4Semi24MMA`, code +7 or -7 with group-32 scales (1 + g + 2n) / 8, so the value also
tells which scale was read) with two activations:

- identity: x = I (64 x 64), so out[k, n] = W[n, k]: the position of the non-zero in the output is the
  (row, input) where the kernel put the weight (default launch, then every block_m);
- ramp: x = [1, 2, ..., 64] (M = 1, the decode path), so out[n] = (k + 1) W[n, k]: the value tells k.

All values are exact in fp16/bf16 and each output has one product, so a right kernel equals the
reference bit for bit. Writes DIR/layout_probe.pt (probe table, mask, packed tensors, and per
default-launch case the kernel and reference outputs, `[512, M, 16]` in the activation dtype) and
DIR/layout_probe.json (per case: probes, correct, max error, the first mismatches with where the
value went, and for identity cases with mismatches the (n, k) each probe landed on). A permutation
error is diagnosed offline from these, with no second GPU run.

Without a GPU or without sparsekit._C the kernels are marked not run (exit 2) unless --stand-in, which
runs the reference backend in their place, labelled as such (the CPU rehearsal of
`bash scripts/gpu_check.sh --rehearse`). Exit 0: every probe matched; 1: a mismatch (files written).
Runs from a plain checkout, with no install.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path and (ROOT / "sparsekit").is_dir():  # a plain checkout: no install needed
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

N, K = 16, 64
SLOTS = K // 2
GROUP = 32
PATTERNS = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
KINDS = ("semi24_mma", "int4_semi24_mma")
BLOCK_MS = (8, 16, 32, 64, 128)
MAX_MISMATCHES = 64

#: kernel(x, layout, block_m or None) -> out; None: the default launch (packed_linear, backend "cuda")
KernelFn = Callable[[torch.Tensor, object, "int | None"], torch.Tensor]


def mask_positions() -> torch.Tensor:
    """`[N, K/4, 2]` kept positions (0..3, ascending) of the probe tile's fixed 2:4 mask."""
    idx = torch.empty(N, K // 4, 2, dtype=torch.uint8)
    for r in range(N):
        for g in range(K // 4):
            idx[r, g] = torch.tensor(PATTERNS[(r + g) % 6])
    return idx


def probe_table() -> torch.Tensor:
    """`[N * SLOTS, 4]` int64 rows (row, slot, input k of the non-zero, int4 code): probe p = row * 32 + slot."""
    idx = mask_positions()
    rows = []
    for r in range(N):
        for s in range(SLOTS):
            g = s // 2
            rows.append((r, s, 4 * g + int(idx[r, g, s % 2]), 7 if (r + s) % 2 == 0 else -7))
    return torch.tensor(rows, dtype=torch.int64)


def int4_scales() -> torch.Tensor:
    """`[N, K / GROUP]` fp16 scales (1 + g + 2n) / 8: distinct, exact, and each names its (row, group)."""
    n = torch.arange(N)[:, None]
    g = torch.arange(K // GROUP)[None, :]
    return ((1 + g + 2 * n) / 8).to(torch.float16)


def weight_value(kind: str, row: int, k: int, code: int) -> float:
    """The dense value W[row, k] of a probe."""
    if kind == "semi24_mma":
        return 1.0
    return code * float(int4_scales()[row, k // GROUP])


def build_layouts(kind: str, dtype: torch.dtype, device: torch.device = torch.device("cpu")) -> list:
    """The 512 one-hot probe layouts of `kind`, in probe order, packed by sparsekit.pack (mma.sp order)."""
    from sparsekit.pack import Int4Semi24, Semi24, to_mma
    from sparsekit.pack.layouts import pack_meta, pack_nibbles

    idx = mask_positions()
    mask = torch.zeros(N, K // 4, 4, dtype=torch.bool).scatter_(2, idx.long(), True).reshape(N, K)
    meta = pack_meta(idx)
    out = []
    for r, s, k, code in probe_table().tolist():
        if kind == "semi24_mma":
            w = torch.zeros(N, K, dtype=dtype)
            w[r, k] = 1.0
            base = Semi24.pack(w, mask, name=f"probe[{r},{s}]")
        else:
            nibbles = torch.full((N, SLOTS), 8, dtype=torch.uint8)  # code 0 (+8): the kept zeros
            nibbles[r, s] = code + 8
            base = Int4Semi24((N, K), pack_nibbles(nibbles), meta, int4_scales(), None, GROUP)
        out.append(to(to_mma(base, name=f"probe[{r},{s}]"), device))
    return out


def to(layout, device: torch.device):
    """The layout with its tensors on `device`."""
    return type(layout).from_tensors(layout.shape, {f: t.to(device) for f, t in layout.tensors().items()},
                                     layout.attrs())


def activations(mode: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if mode == "identity":
        return torch.eye(K, dtype=dtype, device=device)
    return (torch.arange(K, device=device, dtype=torch.float32) + 1).to(dtype)[None, :]


def cuda_kernel() -> KernelFn:
    """The CUDA kernels: the default launch through packed_linear, a given block_m through sparsekit._C."""
    from sparsekit import _ext
    from sparsekit.ops.packed_linear import packed_linear

    def run(x, layout, block_m):
        if block_m is None:
            return packed_linear(x, layout, backend="cuda")
        ext = _ext.load()
        if layout.KIND == "int4_semi24_mma":
            return ext.int4_sparse24_gemm(x, layout.codes, layout.meta, layout.scales, layout.group_size, bias=None,
                                          splits=1, block_m=block_m)
        return ext.sparse24_gemm(x, layout.values, layout.meta, bias=None, splits=1, block_m=block_m)

    return run


def reference_kernel() -> KernelFn:
    from sparsekit.ops.packed_linear import packed_linear

    return lambda x, layout, block_m: packed_linear(x, layout, backend="reference")


def cuda_unavailable() -> str | None:
    """Why the CUDA kernels cannot run here, or None."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    from sparsekit import _ext

    if not _ext.available():
        return "sparsekit._C is not built"
    return None


def _nonzeros(out: torch.Tensor, mode: str, kind: str, row: int, k: int, code: int) -> list:
    """Where the output is non-zero: [n, k, value] (identity: k is the output row; ramp: k from the value)."""
    found = []
    o = out.float().cpu()
    for pos in (o != 0).nonzero().tolist()[:8]:
        v = float(o[tuple(pos)])
        if mode == "identity":
            found.append([pos[1], pos[0], v])
        else:
            w = weight_value(kind, row, k, code)
            found.append([pos[1], round(v / w - 1, 3), v])
    return found


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: " + (str(exc).strip().splitlines() or [""])[0][:300]


def run_cases(kernel: KernelFn | None, device: torch.device, dtypes=(torch.float16, torch.bfloat16),
              block_ms=BLOCK_MS, kinds=KINDS, on_case: Callable[[list, dict], None] | None = None
              ) -> tuple[list, dict]:
    """Every probe through every case; returns (case summaries, tensors of the default-launch cases).

    kernel None: the kernels do not run (their outputs are None, correct is None). The reference runs
    on the CPU and each kernel output is copied back at once, so a kernel that breaks the device's
    context leaves every earlier result, and the references, intact: the case records the error and the
    cases after it are marked not run. Default launches (identity, then ramp) of every kind and dtype come
    first, the block_m sweep after. `on_case(cases, tensors)` is called after each case (to save as it goes)."""
    table = probe_table().tolist()
    cases, tensors, broken = [], {}, None
    cpu = torch.device("cpu")
    plan = [(kind, dtype, mode, None) for kind in kinds for dtype in dtypes for mode in ("identity", "ramp")]
    plan += [(kind, dtype, "identity", bm) for kind in kinds for dtype in dtypes for bm in block_ms]
    layouts: dict = {}
    refs: dict = {}
    for kind, dtype, mode, bm in plan:
        dname = str(dtype).replace("torch.", "")
        if (kind, dtype) not in layouts:
            layouts[kind, dtype] = build_layouts(kind, dtype)
        cpu_layouts = layouts[kind, dtype]
        x_cpu = activations(mode, dtype, cpu)
        if (kind, dtype, mode) not in refs:
            refs[kind, dtype, mode] = torch.stack([reference_kernel()(x_cpu, lay, None) for lay in cpu_layouts])
        ref = refs[kind, dtype, mode]
        case = {"kind": kind, "dtype": dname, "mode": mode, "m": x_cpu.shape[0], "block_m": bm,
                "probes": len(cpu_layouts), "correct": None, "max_abs_err": None, "mismatches": []}
        out = None
        if kernel is not None and broken is None:
            try:
                x = x_cpu.to(device)
                if (kind, dtype, device) not in layouts:
                    layouts[kind, dtype, device] = [to(lay, device) for lay in cpu_layouts]
                out = torch.stack([kernel(x, lay, bm).cpu() for lay in layouts[kind, dtype, device]])
            except Exception as exc:  # noqa: BLE001 - recorded: the point is to bring back what happened
                case["error"] = _first_line(exc)
                broken = f"{kind}/{dname}/{mode}/block_m={bm}: {case['error']}"
        elif kernel is not None:
            case["error"] = f"not run: an earlier case failed ({broken})"
        if out is not None:
            err = (out.float() - ref.float()).abs().flatten(1)
            bad = ~(err.amax(dim=1) <= 1e-3 * ref.float().abs().flatten(1).amax(dim=1)) \
                | ~torch.isfinite(out.float()).flatten(1).all(dim=1)
            case.update(correct=int((~bad).sum()), max_abs_err=float(err.max()))
            case["mismatches"] = [
                {"row": r, "slot": s, "expected": {"n": r, "k": k, "value": weight_value(kind, r, k, c)
                                                   * (1 if mode == "identity" else k + 1)},
                 "found": _nonzeros(out[p], mode, kind, r, k, c)}
                for p, (r, s, k, c) in enumerate(table) if bad[p]][:MAX_MISMATCHES]
            if mode == "identity" and bool(bad.any()):
                landed = []
                for p in range(len(table)):
                    nz = (out[p].float() != 0).nonzero().tolist()
                    landed.append([nz[0][1], nz[0][0]] if len(nz) == 1 else None)
                case["landed_nk"] = landed
        cases.append(case)
        if bm is None:
            tensors[f"{kind}/{dname}/{mode}"] = {"reference": ref, "kernel": out}
        if on_case is not None:
            on_case(cases, tensors)
    return cases, tensors


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for layout_probe.pt and layout_probe.json")
    p.add_argument("--stand-in", action="store_true",
                   help="without a GPU / sparsekit._C, run the reference backend in the kernels' place (labelled)")
    p.add_argument("--dtypes", default="float16,bfloat16")
    args = p.parse_args(argv)
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",") if d]
    if any(d not in (torch.float16, torch.bfloat16) for d in dtypes):
        p.error("--dtypes: the sparse tensor cores take float16 and bfloat16")

    from sparsekit.utils.env import versions

    why = cuda_unavailable()
    if why is None:
        device, kernel, backend, status = torch.device("cuda"), cuda_kernel(), "cuda", "ran"
        block_ms = BLOCK_MS
    elif args.stand_in:
        device, kernel, backend = torch.device("cpu"), reference_kernel(), "reference"
        status, block_ms = f"stand-in: the reference backend ran in the CUDA kernels' place ({why})", ()
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        kernel, backend, status, block_ms = None, None, f"not run: {why}", ()
    args.out.mkdir(parents=True, exist_ok=True)
    head = {"tool": "scripts/layout_probe.py", "command": "python3 scripts/layout_probe.py " + shlex.join(argv),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
            "versions": versions(), "kernel_backend": backend, "stand_in": backend == "reference",
            "kernel_status": status, "ok": None, "complete": False,
            "tile": {"n": N, "k": K, "group_size": GROUP}, "patterns": PATTERNS,
            "mask_rule": "row r, group g keeps inputs 4g + PATTERNS[(r + g) % 6]",
            "probe_rule": "probe p = row * 32 + slot; non-zero at k = 4 (slot // 2) + PATTERNS[(row + slot // 2) % 6]"
                          "[slot % 2]; semi24: value 1; int4: code +7 if (row + slot) even else -7, "
                          "scale (1 + k // 32 + 2 row) / 8"}
    example = {kind: build_layouts(kind, torch.float16)[0].tensors() for kind in KINDS}
    saved_tensors = [0]

    def save(cases: list, tensors: dict, final: bool = False) -> dict:
        """Both files as they stand (the JSON after every case, the tensors when a new output came)."""
        summary = {**head, "cases": cases}
        if final:
            ran_all = kernel is not None and all(c["correct"] is not None for c in cases)
            summary["complete"] = True
            if backend == "cuda":
                summary["ok"] = ran_all and all(c["correct"] == c["probes"] for c in cases)
        summary = json.loads(json.dumps(summary))  # plain types only: torch.load(weights_only=True) reads the .pt
        if final or len(tensors) != saved_tensors[0]:
            torch.save({"summary": summary, "probes": probe_table(), "probe_columns": ["row", "slot", "k", "int4_code"],
                        "mask_positions": mask_positions(), "int4_scales": int4_scales(), "packed_probe0": example,
                        "outputs": tensors}, args.out / "layout_probe.pt")
            saved_tensors[0] = len(tensors)
        (args.out / "layout_probe.json").write_text(json.dumps(summary, indent=1) + "\n")
        return summary

    def on_case(cases: list, tensors: dict) -> None:
        c = cases[-1]
        res = c.get("error") or ("not run" if c["correct"] is None else f"{c['correct']}/{c['probes']} correct")
        print(f"{c['kind']:<16}{c['dtype']:<9}{c['mode']:<9} M={c['m']:<3} block_m={str(c['block_m']):<5} {res}",
              flush=True)
        save(cases, tensors)

    cases, tensors = run_cases(kernel, device, dtypes, block_ms, on_case=on_case)
    summary = save(cases, tensors, final=True)
    print(f"kernels: {status} -> {args.out / 'layout_probe.json'}")
    if kernel is None:
        return 2
    return 0 if summary["ok"] or backend == "reference" else 1


if __name__ == "__main__":
    sys.exit(main())
