"""What 2 MiB pages change on this CPU: the read rate of a buffer far larger than the last-level cache, and the
cost of moving a written buffer onto them (`sparsekit.utils.pages.to_huge_pages`: MADV_COLLAPSE).

    python bench/kernels/cpu/huge_pages.py --out bench/results/cpu/huge_pages_zen4.json   # ~2 min, idle machine

Per thread count, `rounds` alternating pairs of reads (bench_cpu_gemm.py's `bandwidth`: the faster of a sum and
a dot product, median over repeats) of a 2 GiB buffer on torch's 4 KiB pages and of one moved onto 2 MiB pages;
then the time `to_huge_pages` takes on a fresh written buffer (1 GiB; GB/s moved). The kernels' own rates on both pages
come from `cpu_targets.py --pages 4k|2m`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # run from a plain checkout: the package is the tree itself
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.kernels.bench_cpu_gemm import bandwidth, cpu_name  # noqa: E402
from sparsekit.utils.env import versions  # noqa: E402
from sparsekit.utils.pages import to_huge_pages, unavailable  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,2", help="comma list of thread counts (default 1,2)")
    p.add_argument("--rounds", type=int, default=3, help="alternating 4 KiB / 2 MiB read pairs per thread count")
    p.add_argument("--gib", type=float, default=2.0, help="read buffer size in GiB [2]")
    p.add_argument("--collapse-gib", type=float, default=1.0, help="buffer moved onto 2 MiB pages, GiB [1]")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    why = unavailable()
    if why:
        print(f"huge_pages: {why}", file=sys.stderr)
        return 2
    result = {"cpu": cpu_name()[0], "versions": versions(),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": "python bench/kernels/cpu/huge_pages.py " + shlex.join(argv), "read": {}}
    for nt in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(nt)
        runs = {"4k": [], "2m": []}
        for _ in range(args.rounds):
            for pages in runs:
                runs[pages].append(bandwidth(args.gib, huge=pages == "2m")["read_gbps"])
        result["read"][str(nt)] = {k: {"median_gbps": statistics.median(v), "runs_gbps": v} for k, v in runs.items()}
        print(f"{nt}t read: 4 KiB pages {statistics.median(runs['4k']):.1f} GB/s, 2 MiB pages "
              f"{statistics.median(runs['2m']):.1f} GB/s (runs: {runs})", flush=True)
    torch.set_num_threads(1)
    buf = torch.ones(int(args.collapse_gib * 2 ** 28))  # written: there are pages to move
    t0 = time.perf_counter()
    moved = to_huge_pages([buf])
    seconds = time.perf_counter() - t0
    result["collapse"] = {"bytes": moved.huge_bytes, "seconds": seconds, "gbps": moved.huge_bytes / seconds / 1e9,
                          "reason": moved.reason}
    print(f"to_huge_pages: {moved.huge_bytes / 2 ** 30:.2f} GiB in {seconds:.2f} s "
          f"({moved.huge_bytes / seconds / 1e9:.2f} GB/s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
