"""Would 2:4 rows stored in K blocks stream faster at one token? Emulated with today's kernel, timed side by side.

    python bench/kernels/semi24_kblocks.py --out bench/results/cpu/semi24_kblocks_zen4_1t.json        # ~1 min
    python bench/kernels/semi24_kblocks.py --acts bf16 --out bench/results/cpu/semi24_kblocks_zen4_1t_bf16.json
    python bench/kernels/semi24_kblocks.py --table --out bench/results/cpu/semi24_kblocks_zen4_1t.json

A long 2:4 row (K = 14336: 14 KB of bf16 values, 1.8 KB of positions) is read by the one-token kernel in
segments of at most 4096 inputs over blocks of rows (`kept_bf16_segments`), so each row's segment is a short
run of bytes 14 KB from the next row's. A CPU byte order with the rows stored in K blocks (`[K / Kb][N][Kb]`)
would make every segment of every row one contiguous stream. Before building that layout, this measures what
it would give, on the same random weights (2:4 bf16 values, `--copies` copies rotated so that every call
streams from memory), in alternating rounds (`--rounds`, each the median of `--calls` calls per variant):

- `plain`: the N x K layout as stored today, one call;
- `kblocks`: the same weights re-stored as `--segments` contiguous N x Kb layouts, one call each on its slice
  of the activations, the outputs summed: the blocked order with today's kernels;
- `stream`: the blocked bytes as one (segments * N) x Kb layout, one call: the same bytes in one contiguous
  stream with no per-segment calls (its output is not the product; only its time counts).

Writes the per-round medians and their medians (CPU, versions, date, command) to `--out`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a plain checkout: the package is the tree itself
    sys.path.insert(0, str(ROOT))

from bench.common import print_table, write_result  # noqa: E402  (after the path insert)

VARIANTS = ("plain", "kblocks", "stream")


def table(result: dict) -> str:
    """Per variant: the median over rounds of the per-round medians, its range, and the change against plain."""
    med = {v: statistics.median(result["rounds_ms"][v]) for v in VARIANTS}
    lines = [f"{result['shape']} 2:4 bf16 values, {result['acts']} activations, one token, {result['threads']} "
             f"thread(s), {result['segments']} segments of {result['kb']} inputs, {result['copies']} copies, "
             f"{len(result['rounds_ms']['plain'])} rounds", "",
             "| variant | median ms | rounds (min - max) | vs plain |", "|---|---|---|---|"]
    for v in VARIANTS:
        r = result["rounds_ms"][v]
        lines.append(f"| {v} | {med[v]:.3f} | {min(r):.3f} - {max(r):.3f} | {med[v] / med['plain'] - 1:+.1%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="4096x14336", help="N x K [4096x14336]")
    p.add_argument("--segments", type=int, default=4, help="K blocks; K / segments must be a multiple of 64 [4]")
    p.add_argument("--acts", choices=("float", "bf16"), default="float", help="activation dtype [float]")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--copies", type=int, default=8, help="weight copies rotated per call [8]")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--calls", type=int, default=40, help="calls per variant and round [40]")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--table", action="store_true", help="print the table of --out and exit")
    args = p.parse_args(argv)
    if args.table:
        if args.out is None:
            p.error("--table reads --out")
        return print_table("semi24_kblocks", args.out, table)
    try:
        n, k = (int(x) for x in args.shape.lower().split("x"))
    except ValueError:
        p.error(f"--shape must be N x K, e.g. 4096x14336, got {args.shape!r}")
    if args.segments < 1 or k % (64 * args.segments):
        p.error(f"--segments: K = {k} must split into {args.segments} blocks of a multiple of 64 inputs")
    for name in ("threads", "copies", "rounds", "calls"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")

    import torch

    from sparsekit import _ext
    from sparsekit.ops.backends.cpu import cpu_linear
    from sparsekit.pack import Semi24
    from sparsekit.prune.patterns import nm_mask
    from sparsekit.utils.env import cpu_model, versions

    if not _ext.cpu_available():
        print("semi24_kblocks: sparsekit._cpu is not built", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    s, kb = args.segments, k // args.segments
    g = torch.Generator().manual_seed(0)
    plain, kblocks, stream = [], [], []
    for _ in range(args.copies):
        w = torch.randn(n, k, generator=g) * 0.02
        mask = nm_mask(torch.rand(n, k, generator=g), 2, 4)
        lay = Semi24.pack(w.masked_fill(~mask, 0).bfloat16(), mask)
        values = lay.values.reshape(n, s, kb // 2).transpose(0, 1).contiguous()  # [S, N, Kb / 2]
        meta = lay.meta.reshape(n, s, kb // 8).transpose(0, 1).contiguous()
        plain.append(lay)
        kblocks.append([Semi24((n, kb), values[i], meta[i]) for i in range(s)])
        stream.append(Semi24((s * n, kb), values.reshape(s * n, kb // 2), meta.reshape(s * n, kb // 8)))
    x = torch.randn(1, k, generator=g).to(torch.bfloat16 if args.acts == "bf16" else torch.float32)
    parts = [x[:, i * kb:(i + 1) * kb].contiguous() for i in range(s)]

    def run_kblocks(blocks: list) -> torch.Tensor:
        y = cpu_linear(parts[0], blocks[0]).float()
        for i in range(1, s):
            y += cpu_linear(parts[i], blocks[i]).float()
        return y

    want = cpu_linear(x, plain[0]).float()
    got = run_kblocks(kblocks[0])
    # the sums differ only in order (fp32; bf16 activations: each segment's output rounded to bf16)
    tol = 2.0 ** -7 if args.acts == "bf16" else 1e-5
    err = float((got - want).norm() / want.norm())
    if err > tol:
        print(f"semi24_kblocks: the K-blocked sum disagrees with the plain layout (rel err {err:.1e})", file=sys.stderr)
        return 1
    fns = {"plain": lambda i: cpu_linear(x, plain[i]), "kblocks": lambda i: run_kblocks(kblocks[i]),
           "stream": lambda i: cpu_linear(parts[0], stream[i])}
    rounds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for v in VARIANTS:
            times = []
            for c in range(args.calls):
                t0 = time.perf_counter()
                fns[v](c % args.copies)
                times.append(time.perf_counter() - t0)
            rounds[v].append(statistics.median(times) * 1e3)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v} {rounds[v][-1]:.3f} ms" for v in VARIANTS),
              flush=True)
    result = {"shape": f"{n}x{k}", "segments": s, "kb": kb, "acts": args.acts, "threads": args.threads,
              "copies": args.copies, "calls": args.calls, "rel_err_kblocks": err, "rounds_ms": rounds,
              "cpu": cpu_model(), "versions": versions(),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": "python bench/kernels/semi24_kblocks.py " + shlex.join(argv)}
    print(table(result))
    if args.out is not None:
        write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
