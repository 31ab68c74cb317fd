"""One CPU kernel, two builds of sparsekit, timed side by side: the change against the commit before it.

    git worktree add ../base HEAD~1 && (cd ../base && python setup.py build_ext --inplace)
    python bench/kernels/ab_builds.py --base ../base --layout int4_semi24 --acts int8 --shape 4096x4096 --copies 1
    python bench/kernels/ab_builds.py --base ../base --layout int4_semi24 --acts int8 --threads 2 --copies 4 \\
        --out bench/results/cpu/ab_int4_semi24_a8.json

On a shared VM the memory and the clock move by tens of % between minutes, more than most kernel changes:
two runs of bench_cpu_gemm.py minutes apart do not compare. Here each build runs in a process of its own
(`PYTHONPATH` = its checkout, whose extension it imports), the two alternate in short turns (`--seconds`
each) for `--rounds` rounds, and both time the same weights (packed once, saved, rebuilt by each build's
own layout classes): a drift of the machine lands on both. With `--base-layout`, the base turns time another
layout of the same random weights (2:4 masked alike) instead: `--base . --base-layout int4 --layout int4_semi24`
is int4 + 2:4 against int4 in one build, paired the same way. `--layout fp32_gemv` times the same random
weights left dense in fp32 through sparsekit's GEMV (`fp32`: torch's F.linear; `--acts float`), `bf16_gemv` /
`bf16` the same in bf16 (`--acts bf16`). Single calls are timed (weights rotated over
`--copies` copies: 1 stays in the last-level cache where it fits, more stream from memory) and pooled per
build: their median, their 10th percentile, and the fastest turn's median. The slowdowns of a shared machine
only add time, and they come in phases longer than a call, so the 10th percentile and the fastest turn say
more about the kernel than the median does (two copies of the same code measured -28% apart in medians,
-3% in 10th percentiles). Prints them and the change, and writes them to `--out` when given (CPU, versions,
both checkouts' commits, date, command).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYOUTS = ("int4", "int4_semi24", "mxfp4", "int8", "semi24")
#: the same random weights left dense, in fp32 or bf16: sparsekit's GEMV (`cpu_dense_linear`) and torch's F.linear;
#: each with the activations of its dtype (the --acts it takes)
DENSE = {"fp32_gemv": "float", "fp32": "float", "bf16_gemv": "bf16", "bf16": "bf16"}


def _git_rev(tree: Path) -> str | None:
    out = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], check=False,
                         capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"], check=False,
                           capture_output=True, text=True)
    if out.returncode:
        return None
    return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def pack_weights(layout: str, n: int, k: int, copies: int, path: Path) -> None:
    """`copies` random weights packed in `layout` (int4 kinds: g128 symmetric), saved as plain tensors."""
    import torch

    from sparsekit.pack import MXFP4, Int4, Int4Semi24, Int8, Semi24
    from sparsekit.prune.patterns import nm_mask
    from sparsekit.quant.formats import get_format

    g = torch.Generator().manual_seed(0)
    saved = []
    for _ in range(copies):
        w = torch.randn(n, k, generator=g) * 0.02
        mask = nm_mask(torch.rand(n, k, generator=g), 2, 4)
        if layout in DENSE:
            saved.append({"cls": layout, "w": w.bfloat16() if DENSE[layout] == "bf16" else w})
            continue
        if layout == "int4":
            lay = Int4.pack(get_format("int4", 128, True).quantize(w))
        elif layout == "int4_semi24":
            lay = Int4Semi24.pack(get_format("int4", 128, True).quantize(w.masked_fill(~mask, 0), mask), mask)
        elif layout == "mxfp4":
            lay = MXFP4.pack(get_format("mxfp4").quantize(w))
        elif layout == "semi24":
            lay = Semi24.pack(w.masked_fill(~mask, 0).bfloat16(), mask)
        else:
            q8 = get_format("int8").quantize(w)
            lay = Int8(q8.shape, q8.codes.to(torch.int8), q8.scales.reshape(-1).half())
        saved.append({"cls": type(lay).__name__, "shape": tuple(lay.shape), "tensors": dict(lay.tensors()),
                      "attrs": lay.attrs()})
    torch.save(saved, path)


def worker(weights: Path, acts: str, m: int, threads: int, seconds: float) -> dict:
    """One turn, in the build on sys.path: median and p10 of single calls over `seconds`."""
    import torch

    torch.set_num_threads(threads)
    from sparsekit import pack
    from sparsekit.ops.backends.cpu import cpu_linear

    saved = torch.load(weights, weights_only=False)
    if saved[0]["cls"] in DENSE:  # dense weights as they are, through sparsekit's GEMV or torch's F.linear
        layouts = [s["w"] for s in saved]
        if saved[0]["cls"] in ("fp32", "bf16"):
            call = lambda x, w: torch.nn.functional.linear(x, w)  # noqa: E731
        else:
            from sparsekit.ops.dense_linear import cpu_dense_linear as call
        nbytes = layouts[0].numel() * layouts[0].element_size()
    else:
        layouts = [getattr(pack, s["cls"]).from_tensors(s["shape"], s["tensors"], s["attrs"]) for s in saved]
        call = lambda x, lay: cpu_linear(x, lay, acts=acts)  # noqa: E731
        nbytes = layouts[0].nbytes
    x = torch.randn(m, layouts[0].shape[1], generator=torch.Generator().manual_seed(1))
    if acts == "bf16":  # a bf16 model's activations, into the exact kernels
        x, acts = x.bfloat16(), "float"
    for lay in layouts:  # warm-up: first-call costs, and the weights' pages touched
        call(x, lay)
    times, i = [], 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        call(x, layouts[i % len(layouts)])
        times.append(time.perf_counter() - t)
        i += 1
    return {"times_ms": [t * 1e3 for t in times], "weight_bytes": nbytes}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", type=Path, help="the other checkout, its extension built in place")
    p.add_argument("--new", type=Path, default=ROOT, help="the checkout under test [this one]")
    p.add_argument("--layout", choices=LAYOUTS + tuple(DENSE), default="int4_semi24",
                   help="a packed layout, or dense weights through sparsekit's GEMV (fp32_gemv, bf16_gemv) or "
                        "torch (fp32, bf16)")
    p.add_argument("--base-layout", choices=LAYOUTS + tuple(DENSE), default=None,
                   help="the layout the base turns time (default: --layout), packed from the same random weights")
    p.add_argument("--acts", choices=("float", "bf16", "int8"), default="int8",
                   help="float / bf16: the exact kernels on fp32 / bf16 activations; int8: the cpu_a8 kernels [int8]")
    p.add_argument("--shape", default="4096x14336", help="N x K of the weight [4096x14336: Llama-3-8B down]")
    p.add_argument("--m", type=int, default=1, help="tokens [1]")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--copies", type=int, default=4, help="weights rotated per call; 1 stays in cache [4]")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--seconds", type=float, default=0.5, help="timed seconds per turn [0.5]")
    p.add_argument("--base-prefetch", default=None, metavar="LEVEL:BYTES",
                   help="SPARSEKIT_CPU_PREFETCH for the base build's runs, e.g. l1:2048 (default: the build's own "
                        "choice for this CPU); with --base equal to --new it compares two prefetch plans of one build")
    p.add_argument("--new-prefetch", default=None, metavar="LEVEL:BYTES", help="the same for the new build")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    p.add_argument("--worker", nargs=2, metavar=("WEIGHTS", "JSON_OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        Path(args.worker[1]).write_text(json.dumps(worker(Path(args.worker[0]), args.acts, args.m, args.threads,
                                                          args.seconds)))
        return 0
    try:
        n, k = (int(v) for v in args.shape.lower().split("x"))
    except ValueError:
        n = k = 0
    problems = []
    if n <= 0 or k <= 0:
        problems.append(f"--shape {args.shape!r} must be N x K with positive integers, e.g. 4096x14336")
    elif k % 32:
        problems.append(f"--shape: K = {k} must be a multiple of 32 (a8 blocks of 32; g128 groups, the last one "
                        "may be short, as SmolLM2's K = 576)")
    base_layout = args.base_layout or args.layout
    for lay in dict.fromkeys((args.layout, base_layout)):
        if args.acts == "int8" and lay not in ("int4", "int4_semi24", "mxfp4", "int8"):
            problems.append(f"--acts int8 serves int4, int4_semi24, mxfp4 and int8 only, not {lay}")
        if lay in DENSE and args.acts != DENSE[lay]:
            problems.append(f"{lay} takes {'fp32' if DENSE[lay] == 'float' else 'bf16'} activations only: "
                            f"--acts {DENSE[lay]}")
    if args.base is None or not (args.base / "sparsekit").is_dir():
        problems.append(f"--base {args.base}: not a sparsekit checkout (no sparsekit/ inside)")
    elif not list((args.base / "sparsekit").glob("_cpu*.so")):
        problems.append(f"--base {args.base}: its extension is not built (python setup.py build_ext --inplace there)")
    for flag, spec in (("--base-prefetch", args.base_prefetch), ("--new-prefetch", args.new_prefetch)):
        level, _, size = (spec or "l1:64").partition(":")
        if level not in ("l1", "l2") or not size.isdigit() or int(size) % 64 or not 64 <= int(size) <= 1 << 20:
            problems.append(f"{flag} {spec!r} must be l1:BYTES or l2:BYTES, BYTES a multiple of 64 in [64, 1048576]")
    if min(args.m, args.threads, args.copies, args.rounds) < 1 or args.seconds <= 0:
        problems.append("--m, --threads, --copies, --rounds must be >= 1 and --seconds > 0")
    if problems:
        print("ab_builds: " + "; ".join(problems), file=sys.stderr)
        return 2
    trees = {"base": args.base.resolve(), "new": args.new.resolve()}
    plans = {"base": args.base_prefetch, "new": args.new_prefetch}
    with tempfile.TemporaryDirectory(prefix="sparsekit-ab-") as tmp:
        layouts = {"base": base_layout, "new": args.layout}
        weights = {name: Path(tmp) / f"weights_{lay}.pt" for name, lay in layouts.items()}
        sys.path.insert(0, str(trees["new"]))  # packed by the build under test (both rebuild from plain tensors)
        for name, lay in layouts.items():
            if not weights[name].exists():
                pack_weights(lay, n, k, args.copies, weights[name])
        turns: dict[str, list[dict]] = {name: [] for name in trees}
        for r in range(args.rounds):
            for name, tree in trees.items():
                res = Path(tmp) / f"{name}.json"
                env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(args.threads))
                env.pop("SPARSEKIT_CPU_PREFETCH", None)
                if plans[name]:
                    env["SPARSEKIT_CPU_PREFETCH"] = plans[name]
                cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(weights[name]), str(res),
                       "--acts", args.acts, "--m", str(args.m), "--threads", str(args.threads),
                       "--seconds", str(args.seconds)]
                done = subprocess.run(cmd, env=env, cwd=tmp, check=False, capture_output=True, text=True)
                if done.returncode:
                    print(f"ab_builds: the {name} build ({tree}) failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                    return 1
                turns[name].append(json.loads(res.read_text()))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{nm} {statistics.median(t[-1]['times_ms']):.3f} ms" for nm, t in turns.items()), file=sys.stderr)
    from sparsekit.utils.env import cpu_flags, cpu_model, versions

    builds = {}
    for name, ts in turns.items():
        pooled = sorted(x for t in ts for x in t["times_ms"])
        per_turn = [statistics.median(t["times_ms"]) for t in ts]
        builds[name] = {"tree": str(trees[name]), "commit": _git_rev(trees[name]), "prefetch": plans[name],
                        "layout": layouts[name], "weight_bytes": ts[0]["weight_bytes"], "calls": len(pooled),
                        "ms": statistics.median(pooled), "p10_ms": pooled[len(pooled) // 10],
                        "best_turn_ms": min(per_turn), "turns_ms": per_turn}
        b = builds[name]
        rate = ts[0]["weight_bytes"] / b["p10_ms"] / 1e6
        print(f"{name:4} {b['commit']} {b['layout']}: median {b['ms']:.3f} ms, p10 {b['p10_ms']:.3f} ms ({rate:.1f} GB/s of "
              f"weights), fastest turn {b['best_turn_ms']:.3f} ms")
    change = {key: builds["new"][key] / builds["base"][key] - 1 for key in ("ms", "p10_ms", "best_turn_ms")}
    print(f"new vs base: median {100 * change['ms']:+.1f}%, p10 {100 * change['p10_ms']:+.1f}%, "
          f"fastest turn {100 * change['best_turn_ms']:+.1f}%")
    if args.out is not None:
        flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "fma", "f16c", "amx")))
        record = {"cpu": cpu_model(), "cpu_flags": flags, "layout": args.layout, "base_layout": base_layout,
                  "acts": args.acts, "n": n, "k": k,
                  "m": args.m, "threads": args.threads, "copies": args.copies, "rounds": args.rounds,
                  "seconds": args.seconds, "weight_bytes": turns["new"][0]["weight_bytes"], "builds": builds,
                  "change": change, "versions": versions(),
                  "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "command": "python bench/kernels/ab_builds.py " + shlex.join(sys.argv[1:] if argv is None else argv)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
