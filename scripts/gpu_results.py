#!/usr/bin/env python3
"""Turn what a GPU call brought back into one committed result: bench/results/gpu/<kind>_<date>.json.

    python scripts/gpu_results.py /work/.device/1                         # a scripts/gpu_check.sh output folder
    python scripts/gpu_results.py /work/.device/1 --also /work/.device/2 --note "why the second call ran"
    python scripts/gpu_results.py --table bench/results/gpu/nvidia-h200_2026-12-04.json   # the README tables

The first folder is a `scripts/gpu_check.sh` run (steps.jsonl, tests.jsonl, bench.jsonl, layout_probe.json,
model_speed.jsonl, gpu_check.log); `--also` folders are later calls of the same lease (a rerun of some tests,
a missing model variant): their tests.jsonl and model_speed*.json files are added, labelled with the folder.
The JSON keeps the device and versions (the env step), each step's status and seconds (with the log's tail
for a step that failed or timed out), a test count per step, every failure by name and the 10 slowest tests,
the layout probe's verdict per case, every kernel benchmark row and every model-speed row. layout_probe.pt is not copied (8 MB;
its verdicts are in the JSON). Exit 2 when the first folder is not a gpu_check output.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "gpu"


def _lines(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _step_log(log: str, step: str, tail: int = 12) -> list[str]:
    """The console lines of one step (between its `== step (timeout` header and its `== step:` verdict)."""
    match = re.search(rf"^== {re.escape(step)} \(timeout.*?$(.*?)^== {re.escape(step)}: ", log, re.M | re.S)
    lines = match.group(1).strip("\n").splitlines() if match else []
    # a crash's first lines name the frame that died (faulthandler: the error, a blank, the thread, the frame)
    crash = next((i for i, line in enumerate(lines) if "Fatal Python error" in line), None)
    head = [line for line in lines[crash:crash + 5] if line.strip()] if crash is not None else []
    return head + ["..."] * bool(head) + lines[-tail:]


def _tests(records: list[dict], source: str) -> dict[str, dict]:
    """Per pytest step: outcome counts, the failures by name, and whether the session ended (a process that
    died, e.g. of SIGSEGV, leaves no `exitstatus` line: the test after the last one listed killed it)."""
    out: dict[str, dict] = {}
    for step in dict.fromkeys(r.get("step", "") for r in records):
        mine = [r for r in records if r.get("step", "") == step]
        results = [r for r in mine if r.get("nodeid")]
        end = next((r for r in mine if "exitstatus" in r), None)
        out[step] = {
            "source": source,
            "outcomes": dict(Counter(r["outcome"] for r in results)),
            "failures": [{"nodeid": r["nodeid"], "when": r.get("when"), "longrepr": (r.get("longrepr") or "")[-600:]}
                         for r in results if r["outcome"] in ("failed", "error")],
            "session_ended": end is not None,
            "exitstatus": end["exitstatus"] if end else None,
            "last_result": results[-1]["nodeid"] if results else None,
            # where a step's time went (cold compiles and autotuning show here): the 10 longest test calls
            "slowest": {r["nodeid"]: r["duration"] for r in sorted(
                (r for r in results if r.get("duration") is not None), key=lambda r: -r["duration"])[:10]},
        }
    return out


def _model_speed(folder: Path) -> list[dict]:
    rows = _lines(folder / "model_speed.jsonl")
    for path in sorted(folder.glob("**/model_speed_*.json")):
        record = json.loads(path.read_text())
        rows.append({"variant": ",".join(record["rows"]), "source": folder.name, **record})
    return rows


def collect(first: Path, also: list[Path], notes: list[str]) -> dict:
    steps = _lines(first / "steps.jsonl")
    env = next((r for r in steps if r.get("record") == "env"), None)
    if env is None:
        raise ValueError(f"{first}: no env record in steps.jsonl; not a scripts/gpu_check.sh output folder")
    log = (first / "gpu_check.log").read_text() if (first / "gpu_check.log").is_file() else ""
    step_rows = [r for r in steps if r.get("record") == "step"]
    for r in step_rows:
        if r["status"] in ("failed", "timeout"):
            r["log_tail"] = _step_log(log, r["step"])
    tests = _tests(_lines(first / "tests.jsonl"), first.name)
    for folder in also:
        for step, summary in _tests(_lines(folder / "tests.jsonl"), folder.name).items():
            tests[f"{step}@{folder.name}"] = summary
    probe = json.loads((first / "layout_probe.json").read_text()) if (first / "layout_probe.json").is_file() else {}
    bench = _lines(first / "bench.jsonl")
    return {
        "tool": "scripts/gpu_check.sh",
        "command": "python scripts/gpu_results.py " + shlex.join(sys.argv[1:]),
        "env": env,
        "steps": step_rows,
        "done": next((r for r in steps if r.get("record") == "done"), None),
        "tests": tests,
        "layout_probe": {k: probe.get(k) for k in ("date", "kernel_backend", "kernel_status", "ok", "complete")} | {
            "cases": [{k: c[k] for k in ("kind", "dtype", "mode", "m", "block_m", "probes", "correct", "max_abs_err")}
                      for c in probe.get("cases", [])]} if probe else None,
        "bench_runs": [r for r in bench if r.get("record") == "run"],
        "bench_rows": [r for r in bench if r.get("record") == "row"],
        "model_speed": _model_speed(first) + [row for folder in also for row in _model_speed(folder)],
        "notes": notes,
    }


#: kernel name in bench_packed_gemm.py -> column heading (the CUDA C++ ones, then the Triton ones)
KERNELS = {"cusparselt_24": "cuSPARSELt 2:4", "cuda_semi24": "CUDA 2:4", "cuda_int4_semi24": "CUDA int4+2:4",
           "semi24": "Triton 2:4", "int4": "Triton int4", "int4_semi24": "Triton int4+2:4", "mxfp4": "Triton MXFP4"}


def table(data: dict) -> str:
    """The README's tables: the tests per step, the kernels against cuBLAS dense (speedup, and the packed
    bytes' share of the measured copy bandwidth), and the model-speed rows; a table whose steps brought nothing
    back (a lease cut short) is left out."""
    env = data["env"]
    out = [f"{env['device']} ({env['sms']} SMs), torch {env['torch']}, CUDA {env['cuda']}, Triton {env['triton']}, "
           f"{env.get('date') or next((r['date'][:10] for r in data['bench_runs']), 'undated')}:"]
    if data["tests"]:
        out += ["", "| pytest step | passed | failed | skipped | session ended | last result |",
                "|---|---|---|---|---|---|"]
    for step, t in data["tests"].items():
        o = t["outcomes"]
        last = t["last_result"].split("::")[-1] if t["last_result"] else "-"
        out.append(f"| {step} | {o.get('passed', 0)} | {o.get('failed', 0) + o.get('error', 0)} | {o.get('skipped', 0)} "
                   f"| {'yes' if t['session_ended'] else 'no (process died or timed out)'} | {last} |")
    rows = data["bench_rows"]
    if rows:
        kernels = [k for k in KERNELS if any(r["kernel"] == k for r in rows)]
        bw = max(r["copy_bandwidth_gbps"] for r in data["bench_runs"])
        out += ["", f"Speedup over cuBLAS dense fp16 (its time in ms), and in brackets the packed bytes' rate as a "
                f"fraction of the copy bandwidth measured in the same run ({bw:.0f} GB/s):", "",
                "| shape | M | dense ms | " + " | ".join(KERNELS[k] for k in kernels) + " |",
                "|---|---|---|" + "---|" * len(kernels)]
        for shape, m in dict.fromkeys((r["shape"], r["m"]) for r in rows):
            mine = {r["kernel"]: r for r in rows if r["shape"] == shape and r["m"] == m}
            cells = [f"{mine[k]['speedup_vs_dense']:.2f}x ({mine[k]['bw_fraction']:.2f})" if k in mine else "-"
                     for k in kernels]
            out.append(f"| {shape} | {m} | {mine['dense']['ms']:.4f} | " + " | ".join(cells) + " |")
    if data["model_speed"]:
        first = data["model_speed"][0]
        cfg = first["config"]
        out += ["", f"Model speed ({first['preset']}, {cfg['num_hidden_layers']} blocks, {first['dtype']}, eager; "
                f"prefill {list(first['rows'].values())[0]['prefill']['tokens']} tokens, batch 1):", "",
                "| variant | call | Triton tiles | weights GiB | prefill ms | decode tok/s | peak GiB | J/token |",
                "|---|---|---|---|---|---|---|---|"]
        # the call (`source`: an --also folder, else the check itself) and the tile mode tell apart two rows of
        # one variant; records written before the mode was recorded show "-"
        tiles = {True: "autotuned", False: "fixed", None: "-"}
        for rec in data["model_speed"]:
            for name, r in rec["rows"].items():
                joules = f"{r['joules_per_token']:.2f}" if r.get("joules_per_token") is not None else "-"
                out.append(f"| {name} | {rec.get('source', 'check')} | {tiles[rec.get('triton_autotune')]} | "
                           f"{r['weight_bytes'] / 2 ** 30:.2f} | {r['prefill']['median_ms']:.2f} | "
                           f"{r['decode']['tokens_per_s']:.1f} | {r['peak_mem_bytes'] / 2 ** 30:.2f} | {joules} |")
    return "\n".join(out)


def _default_out(folder: Path, kind: str, stamp: str, env_date: str | None) -> Path:
    """<kind>_<date>.json, or <kind>_<date>T<HHMM>.json when the first name holds another run's result: a
    second lease on the same day must not overwrite the first one's record (collecting the same run again
    does overwrite it)."""
    out = folder / f"{kind}_{stamp[:10]}.json"
    if out.is_file():
        try:
            earlier = json.loads(out.read_text()).get("env", {}).get("date")
        except (json.JSONDecodeError, AttributeError):
            earlier = None
        if earlier != env_date:
            out = folder / f"{kind}_{stamp[:10]}T{stamp[11:13]}{stamp[14:16]}.json"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, nargs="?",
                    help="the scripts/gpu_check.sh output folder the device tool brought back")
    ap.add_argument("--table", type=Path, default=None, help="print the README tables of a committed result JSON")
    ap.add_argument("--also", type=Path, action="append", default=[], help="a later call's output folder")
    ap.add_argument("--note", action="append", default=[], help="what the calls found, in words (repeatable)")
    ap.add_argument("--out", type=Path, default=None, help=f"the JSON to write (default {OUT.relative_to(ROOT)}/"
                    "<kind>_<date>.json, or <kind>_<date>T<HHMM>.json beside another run of that day)")
    args = ap.parse_args(argv)
    if args.table is not None:
        if not args.table.is_file():
            print(f"gpu_results: {args.table} is not a file", file=sys.stderr)
            return 2
        print(table(json.loads(args.table.read_text())))
        return 0
    if args.folder is None:
        ap.error("give the output folder of a gpu_check run (or --table RESULT.json)")
    for folder in [args.folder, *args.also]:
        if not folder.is_dir():
            print(f"gpu_results: {folder} is not a folder", file=sys.stderr)
            return 2
    try:
        result = collect(args.folder, args.also, args.note)
    except ValueError as exc:
        print(f"gpu_results: {exc}", file=sys.stderr)
        return 2
    env = result["env"]
    dates = [env.get("date"), (result["layout_probe"] or {}).get("date"), *(r.get("date") for r in result["bench_runs"])]
    stamp = next((d for d in dates if d), "undated")
    kind = re.sub(r"[^a-z0-9]+", "-", str(env.get("device", "gpu")).lower()).strip("-")
    out = args.out or _default_out(OUT, kind, stamp, env.get("date"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)  # nothing half-written
    verdicts = ", ".join(f"{r['step']} {r['status']}" for r in result["steps"])
    print(f"{env.get('device')}: {verdicts} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
