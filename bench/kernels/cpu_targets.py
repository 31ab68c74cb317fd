"""Where every CPU decode kernel stands against the CPU issue's targets, and what bounds the ones that miss.

    python bench/kernels/cpu_targets.py --out bench/results/cpu/cpu_targets_zen4.json    # ~2 min, idle machine
    python bench/kernels/cpu_targets.py --table --out bench/results/cpu/cpu_targets_zen4.json
    python bench/kernels/cpu_targets.py --pages 2m --out bench/results/cpu/cpu_targets_zen4_2m.json  # 2 MiB pages
    python bench/kernels/cpu_targets.py --table --out bench/results/cpu/cpu_targets_zen4_2m.json --versus bench/results/cpu/cpu_targets_zen4.json
    python bench/kernels/cpu_targets.py --across bench/results/cpu/cpu_targets_zen3_1207.json bench/results/cpu/cpu_targets_zen3_1207_repeat.json

The targets are stated at one token on Llama-3-8B's 4096 x 14336 projection, at the same thread count: every
decode kernel streams its packed bytes at >= 70% of the memory read bandwidth; int4 g128 >= 2x torch's
`_weight_int4pack_mm_for_cpu` and >= 5x fp32 dense; int4 + 2:4 >= 1.25x int4; 2:4 with bf16 values >= 2.5x
fp32 dense. Two runs of `bench_cpu_gemm.py` at 1 and 2 threads measure them:

- from memory: 4096 x 14336, weights rotated past the last-level cache (the targets' setting), with the read
  bandwidth measured in the same run, weights and read buffer on the same pages (`--pages`: torch's 4 KiB, as a
  model's are by default, or 2 MiB where the OS gives them, as SPARSEKIT_HUGE_PAGES=1 places a model's);
- from cache (`--in-cache`): 1024 x 14336, the same rows a quarter as many, one copy that stays in the last-level
  cache (5.5-16 MiB for the packed layouts), so memory costs nothing: the rate the kernel's instructions allow.
  As a fraction of the first run's read bandwidth it is the kernel's ceiling: a kernel whose ceiling is under
  70% cannot reach the target from memory however its loads are scheduled; only fewer instructions per byte
  would (docs/cpu-kernels.md says, per kernel, what those instructions are and why they are not fewer). The ceiling is
  conservative: a call's fixed costs (preparing the activations, starting the threads) fall on a quarter of the
  rows, which shows most at two threads, where calls are shortest.

A kernel that disagrees with its reference in either run (bench_cpu_gemm.py's WRONG) is not judged: exit 1.

Both runs are kept whole in one JSON (`memory`, `cache`: bench_cpu_gemm.py's own results), with the command and
date; `--table` prints the README's two tables from it.

On a VM whose memory its neighbours share, one run is one draw: the read bandwidth moved by 2x between runs minutes
apart on the Zen 3 VM, and a ratio at the line crosses it both ways. `--across` judges each target over several
runs of the same kernels: the median, the range and in how many runs it was met.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run from a plain checkout: the package is the tree itself
    sys.path.insert(0, str(ROOT))

from bench.common import print_table  # noqa: E402  (after the path insert)

MEMORY_SHAPE, CACHE_SHAPE = "4096x14336", "1024x14336"
#: sparsekit's decode kernels (bench_cpu_gemm.py's names), each with what it multiplies
DECODE = {"semi24": "2:4, bf16 values", "semi24_bf16_acts": "2:4, bf16 values; bf16 activations",
          "int4": "int4 g128", "int4_bf16_acts": "int4 g128; bf16 activations",
          "int4_semi24": "int4 + 2:4", "int4_semi24_bf16_acts": "int4 + 2:4; bf16 activations",
          "mxfp4": "MXFP4", "mxfp4_bf16_acts": "MXFP4; bf16 activations", "int8": "int8 per channel",
          "int4_a8": "int4 g128, int8 activations (cpu_a8)", "int4_semi24_a8": "int4 + 2:4, int8 activations",
          "mxfp4_a8": "MXFP4, int8 activations", "int8_a8": "int8, int8 activations"}
BASELINES = ("fp32", "torch_int4")
TARGET = 0.70
#: (target, kernel, baseline, ratio): kernel at least `ratio` times as fast as baseline
SPEEDUPS = [("int4 g128 >= 2x torch int4", "int4", "torch_int4", 2.0),
            ("int4 g128 >= 5x fp32 dense", "int4", "fp32", 5.0),
            ("int4 g128 >= 5x fp32 dense (int8 activations)", "int4_a8", "fp32", 5.0),
            ("int4 + 2:4 >= 1.25x int4", "int4_semi24", "int4", 1.25),
            ("int4 + 2:4 >= 1.25x int4 (int8 activations)", "int4_semi24_a8", "int4_a8", 1.25),
            ("2:4 bf16 values >= 2.5x fp32 dense", "semi24", "fp32", 2.5)]


def _rows(result: dict) -> dict[tuple[str, int], dict]:
    return {(r["kernel"], r["threads"]): r for r in result["rows"] if r["m"] == 1}


def table(result: dict) -> str:
    """The README's tables: per kernel and thread count the fraction of the read bandwidth streamed from memory
    and the ceiling (the from-cache rate over that same read bandwidth); then the speed-up targets."""
    mem, cache = _rows(result["memory"]), _rows(result["cache"])
    threads = sorted({t for _, t in mem})
    reads = {t: result["memory"]["bandwidth"][str(t)]["read_gbps"] for t in threads}
    head = ("| kernel | multiplies | " + " | ".join(f"{t}t: from memory | {t}t: ceiling" for t in threads)
            + f" | >= {TARGET:.0%} |")
    lines = ["Read bandwidth (same run): " + ", ".join(f"{reads[t]:.1f} GB/s at {t} thread{'s' * (t > 1)}"
                                                       for t in threads) + ".", "",
             head, "|---" * (2 + 2 * len(threads) + 1) + "|"]
    for kernel, what in DECODE.items():
        if not any((kernel, t) in mem for t in threads):
            continue
        cells, verdicts = [], []
        for t in threads:
            m, c = mem.get((kernel, t)), cache.get((kernel, t))
            frac = m["read_bw_fraction"] if m else None
            ceil = c["gbps"] / reads[t] if c else None
            cells.append("–" if m is None else f"{m['ms']:.3f} ms, {frac:.0%}")
            cells.append("–" if c is None else f"{c['gbps']:.1f} GB/s, {ceil:.0%}")
            if frac is None:
                continue
            verdicts.append(f"{t}t " + ("yes" if frac >= TARGET else
                                        "no (ceiling below)" if ceil is not None and ceil < TARGET else "no"))
        lines.append(f"| {kernel} | {what} | " + " | ".join(cells) + " | " + ", ".join(verdicts) + " |")
    lines += ["", "| target | " + " | ".join(f"{t}t" for t in threads) + " | met |",
              "|---" * (len(threads) + 2) + "|"]
    for name, kernel, base, ratio in SPEEDUPS:
        cells, met = [], []
        for t in threads:
            k, b = mem.get((kernel, t)), mem.get((base, t))
            if k is None or b is None:
                cells.append("–")
                continue
            x = b["ms"] / k["ms"]
            cells.append(f"x{x:.2f} ({k['ms']:.3f} vs {b['ms']:.3f} ms)")
            met.append(f"{t}t " + ("yes" if x >= ratio else "no"))
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + ", ".join(met) + " |")
    return "\n".join(lines)


def pages_table(small: dict, huge: dict) -> str:
    """The README's page comparison: two runs of this script (`--pages 4k`, `--pages 2m`), per kernel and thread
    count the time from memory on each and the change, with each run's read bandwidth first. ValueError for
    runs that are not a 4k and a 2m run in that order."""
    asked = [run["memory"].get("pages", {}).get("asked", "4k") for run in (small, huge)]  # older runs: 4 KiB
    if asked != ["4k", "2m"]:
        raise ValueError(f"pages_table compares a --pages 4k run with a --pages 2m run; got {asked[0]} and "
                         f"{asked[1]}")
    a, b = _rows(small["memory"]), _rows(huge["memory"])
    threads = sorted({t for _, t in a} & {t for _, t in b})
    read = [(small["memory"]["bandwidth"][str(t)]["read_gbps"], huge["memory"]["bandwidth"][str(t)]["read_gbps"])
            for t in threads]
    lines = ["| kernel | " + " | ".join(f"{t}t: 4 KiB | {t}t: 2 MiB | {t}t: change" for t in threads) + " |",
             "|---" * (1 + 3 * len(threads)) + "|",
             "| read (GB/s) | " + " | ".join(f"{x:.1f} | {y:.1f} | {y / x - 1:+.0%}" for x, y in read) + " |"]
    for kernel in (*BASELINES, *DECODE):
        cells = []
        for t in threads:
            x, y = a.get((kernel, t)), b.get((kernel, t))
            cells.append("– | – | –" if x is None or y is None else
                         f"{x['ms']:.3f} ms | {y['ms']:.3f} ms | {y['ms'] / x['ms'] - 1:+.0%}")
        lines.append(f"| {kernel} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def across_table(runs: list[dict]) -> str:
    """Each target over several runs (of one build's kernels, same pages): per thread count the median, the
    range and `met k/n` of the speed-up ratios, then of each kernel's fraction of its run's read bandwidth
    from memory, with the median of its ceiling (as `table` has it). ValueError for fewer than two runs, or runs
    that differ in pages or thread counts."""
    if len(runs) < 2:
        raise ValueError(f"--across judges targets over several runs; got {len(runs)}")
    mems = [_rows(run["memory"]) for run in runs]
    threads = sorted({t for _, t in mems[0]})
    for run, mem in zip(runs, mems):
        if sorted({t for _, t in mem}) != threads:
            raise ValueError(f"the runs measured different thread counts: {run['date']} has "
                             f"{sorted({t for _, t in mem})}, the first {threads}")
    pages = {run["memory"].get("pages", {}).get("asked", "4k") for run in runs}
    if len(pages) > 1:
        raise ValueError(f"the runs are on different pages ({', '.join(sorted(pages))}): compare them with --versus")

    def cell(values: list[float], ok, fmt) -> str:
        return (f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))}) | "
                f"{sum(map(ok, values))}/{len(values)}")

    per = " / ".join(str(t) for t in threads)
    lines = [f"Runs (their read bandwidth at {per} thread{'s' * (len(threads) > 1)}): " + "; ".join(
        f"{run['date'][:16].replace('T', ' ')} UTC (" + " / ".join(
            f"{run['memory']['bandwidth'][str(t)]['read_gbps']:.1f}" for t in threads) + " GB/s)" for run in runs)
        + ".", "",
        "| target | " + " | ".join(f"{t}t: median (range) | {t}t: met" for t in threads) + " |",
        "|---" * (1 + 2 * len(threads)) + "|"]
    for name, kernel, base, ratio in SPEEDUPS:
        cells = []
        for t in threads:
            xs = [m[(base, t)]["ms"] / m[(kernel, t)]["ms"] for m in mems if (kernel, t) in m and (base, t) in m]
            cells.append("– | –" if not xs else cell(xs, lambda x: x >= ratio, lambda x: f"x{x:.2f}"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    caches = [_rows(run["cache"]) if "cache" in run else {} for run in runs]
    lines += ["", "| kernel | multiplies | " + " | ".join(
        f"{t}t: read {TARGET:.0%}, median (range) | {t}t: met | {t}t: ceiling, median" for t in threads) + " |",
        "|---" * (2 + 3 * len(threads)) + "|"]
    for kernel, what in DECODE.items():
        cells = []
        for t in threads:
            fs = [m[(kernel, t)]["read_bw_fraction"] for m in mems if (kernel, t) in m]
            # the ceiling as `table` has it: the from-cache rate over the same run's read
            cs = [c[(kernel, t)]["gbps"] / run["memory"]["bandwidth"][str(t)]["read_gbps"]
                  for run, c in zip(runs, caches) if (kernel, t) in c]
            cells.append("– | –" if not fs else cell(fs, lambda f: f >= TARGET, lambda f: f"{f:.0%}"))
            cells.append(f"{statistics.median(cs):.0%}" if cs else "–")
        lines.append(f"| {kernel} | {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _all_exist(files: list[Path]) -> bool:
    """Whether every result file to compare is there; if not, says which are missing (the caller exits 2)."""
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"cpu_targets: {', '.join(missing)} does not exist; run the measurement first", file=sys.stderr)
    return not missing


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", default="1,2", help="comma list of thread counts (default 1,2)")
    p.add_argument("--budget", type=float, default=0.4, help="seconds of repeats per measurement [0.4]")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cpu" / "cpu_targets.json")
    p.add_argument("--pages", choices=("4k", "2m"), default="4k",
                   help="weights and bandwidth buffers on 4 KiB pages (default, a model's unless "
                        "SPARSEKIT_HUGE_PAGES=1) or 2 MiB pages")
    p.add_argument("--table", action="store_true", help="print the README tables of --out and exit")
    p.add_argument("--versus", type=Path, default=None,
                   help="with --table: a run on 4 KiB pages; prints how --out (a --pages 2m run) differs from it")
    p.add_argument("--across", type=Path, nargs="+", default=None, metavar="RUN",
                   help="print each target over these runs (median, range, met k/n) and exit")
    args = p.parse_args(argv)
    if args.across is not None:
        if not _all_exist(args.across):
            return 2
        try:
            print(across_table([json.loads(f.read_text()) for f in args.across]))
        except ValueError as exc:
            print(f"cpu_targets: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.versus is not None and not args.table:
        p.error("--versus compares two runs' tables: it needs --table")  # exit 2, nothing measured or written
    if args.versus is not None:
        if not _all_exist([args.versus, args.out]):
            return 2
        try:
            print(pages_table(json.loads(args.versus.read_text()), json.loads(args.out.read_text())))
        except ValueError as exc:
            print(f"cpu_targets: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.table:
        return print_table("cpu_targets", args.out, table)
    from bench.kernels import bench_cpu_gemm

    common = ["--ms", "1", "--threads", args.threads, "--budget", str(args.budget), "--pages", args.pages]
    result = {"command": "python bench/kernels/cpu_targets.py " + shlex.join(argv),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "target_fraction": TARGET}
    with tempfile.TemporaryDirectory() as tmp:
        for key, shape, kernels, extra in [("memory", MEMORY_SHAPE, [*BASELINES, *DECODE], []),
                                           ("cache", CACHE_SHAPE, list(DECODE), ["--in-cache"])]:
            out = Path(tmp) / f"{key}.json"
            rc = bench_cpu_gemm.main(["--shapes", shape, "--kernels", ",".join(kernels), *common, *extra,
                                      "--out", str(out)])
            if rc:
                return rc
            result[key] = json.loads(out.read_text())
            wrong = [f"{r['kernel']} ({r['threads']}t, rel err {r['rel_err']:.1e})" for r in result[key]["rows"]
                     if r["rel_err"] is not None and r["rel_err"] > bench_cpu_gemm.max_rel_err(r["kernel"])]
            if wrong:
                print(f"cpu_targets: {', '.join(wrong)} disagree with the reference in the {key} run: not judged, "
                      f"nothing written", file=sys.stderr)
                return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
