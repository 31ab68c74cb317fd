"""The `sparsekit` command (docs/ARCHITECTURE.md §8): a thin layer over `sparsekit.api`.

Contract: bad input (unknown model, missing data set, bad option value) ends with exit code 2 and a
single line `sparsekit <cmd>: error: <what is wrong and how to fix it>` on stderr; nothing
half-written is left behind (`--json` is written atomically at the end).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from typing import Sequence

from sparsekit._version import __version__
from sparsekit.errors import SparsekitError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse prints usage + error over two lines; the contract is one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _csv(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, got nothing")
    return items


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="short name (smollm2-135m), Hugging Face id or folder, or .gguf file")
    p.add_argument("--device", default="auto", help="auto (CUDA when visible), cpu, cuda, cuda:N [auto]")
    p.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, fp16 on CUDA), float32, float16, bfloat16")
    p.add_argument("--data-dir", default=None, help="folder with the data sets [$SPARSEKIT_DATA]")
    p.add_argument("--json", metavar="FILE", default=None, help="write the report as JSON ('-' for stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")


def _add_backend_option(p: argparse.ArgumentParser) -> None:
    from sparsekit.ops._dispatch import BACKENDS

    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="kernel of the packed modules: auto picks the fastest exact one; cpu_a8 (opt-in) quantizes "
                        "activations to int8 blocks of 32 for int4 / int4+2:4 / MXFP4 / int8 modules; torch_cpu (opt-in) "
                        "runs torch's weight-only CPU kernels on int8 / int4 modules [auto]")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sparsekit", description="Prune and quantize LLMs; measure accuracy, speed, memory.")
    parser.add_argument("--version", action="version", version=f"sparsekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    ev = sub.add_parser("eval", help="perplexity and zero-shot tasks of a model or compressed checkpoint",
                        description="Evaluate a model: WikiText-2 / C4 perplexity with the Wanda/SparseGPT protocol.")
    _add_model_options(ev)
    ev.add_argument("--ppl", type=_csv, default=None,
                    help="perplexity data sets: wikitext2,c4 [wikitext2, or none when --tasks is given]")
    ev.add_argument("--tasks", type=_csv, default=[], help="zero-shot tasks: arc_easy,arc_challenge,boolq,rte,"
                                                           "hellaswag,winogrande,openbookqa,piqa,lambada")
    ev.add_argument("--seqlen", type=_positive_int, default=2048, help="window length in tokens [2048]")
    ev.add_argument("--limit", type=_positive_int, default=None,
                    help="score only the first N windows per data set (and the first N examples per task)")
    ev.add_argument("--batch-size", type=_positive_int, default=1, help="windows per forward pass [1]")
    _add_backend_option(ev)
    ev.set_defaults(func=_cmd_eval)

    be = sub.add_parser("bench", help="prefill latency, decode tokens/s, peak memory, energy of a model",
                        description="Benchmark a model or compressed checkpoint: prefill latency and decode tokens/s "
                                    "(median of repeats, warm-up excluded), peak memory, joules/token (GPU: NVML; CPU: "
                                    "RAPL where readable).")
    _add_model_options(be)
    be.add_argument("--prefill", type=_positive_int, default=2048, help="prefill tokens per sequence [2048]")
    be.add_argument("--decode", type=_positive_int, default=128, help="new tokens generated [128]")
    be.add_argument("--batch", type=_positive_int, default=1, help="sequences per batch [1]")
    be.add_argument("--repeats", type=_positive_int, default=5, help="timed runs (the median is reported) [5]")
    _add_backend_option(be)
    be.add_argument("--compile", action="store_true",
                    help="static KV cache + torch.compile (GPU: CUDA graphs; CPU: inductor)")
    be.set_defaults(func=_cmd_bench)

    sw = sub.add_parser("sweep", help="a grid of recipes: perplexity, bytes (and speed); Pareto plot and HTML report",
                        description="Run (or resume) a sweep over a grid of recipes (see sparsekit.sweep for the YAML).")
    sw.add_argument("--grid", help="grid YAML file (required unless --table); start the same command in several "
                                   "processes to share the grid: each claims the next free point")
    sw.add_argument("--out", required=True, metavar="DIR", help="folder for points.jsonl, plots and report.html")
    sw.add_argument("--table", action="store_true", help="print DIR's finished points as a markdown grid (rows: "
                                                         "first axes, columns: last axis; Pareto points in bold)")
    sw.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="local: this process (start several to share the grid); ray: one Ray task per point, "
                         "results gathered by this process [local]")
    sw.add_argument("--address", default=None, help="with --executor ray: the cluster to join (e.g. ray://host:10001 "
                                                    "or auto) [a local Ray instance]")
    sw.add_argument("--cpus-per-point", type=_positive_int, default=None,
                    help="with --executor ray: CPUs a point reserves [1; the grid's whole device needs on GPU]")
    sw.add_argument("--gpus-per-point", type=float, default=None,
                    help="with --executor ray: GPUs a point reserves [1 when the grid's device is cuda, else 0]")
    sw.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    sw.set_defaults(func=_cmd_sweep)

    co = sub.add_parser("compress", help="prune and/or quantize a model with a recipe; write a checkpoint",
                        description="Apply a recipe (YAML file or built-in name) to a model and write a compressed "
                                    "checkpoint folder that `sparsekit eval DIR` reads.")
    _add_model_options(co)
    co.add_argument("--recipe", required=True, help="YAML file or built-in name (e.g. wanda-2:4, sparsegpt-50, "
                                                    "int4-gptq, sparsegpt-2:4+int4-joint); `--recipe list` shows "
                                                    "the built-ins")
    co.add_argument("--out", metavar="DIR", help="new (or empty) folder for the checkpoint (required)")
    co.add_argument("--calib", default="c4", choices=["c4", "wikitext2"], help="calibration text [c4]")
    co.add_argument("--nsamples", type=_positive_int, default=128, help="calibration windows [128]")
    co.add_argument("--seqlen", type=_positive_int, default=512, help="tokens per calibration window [512]")
    co.add_argument("--seed", type=int, default=0, help="calibration sampling seed [0]")
    co.add_argument("--calib-batch-size", type=_positive_int, default=8,
                    help="calibration windows per block forward [8]")
    co.add_argument("--calib-dtype", default="float32", choices=["float32", "bfloat16", "auto"],
                    help="precision of the calibration forwards (statistics stay fp32); auto: bf16 where the "
                         "device has it natively [float32]")
    co.set_defaults(func=_cmd_compress)

    ex = sub.add_parser("export", help="write a checkpoint in a format serving stacks read (vLLM, llama.cpp)",
                        description="Export a sparsekit checkpoint folder: compressed-tensors (pack-quantized, for "
                                    "vLLM / SGLang; a folder) or GGUF (for llama.cpp, Ollama, LM Studio; one file). "
                                    "Grids that match are written exactly; anything re-grouped or re-quantized is "
                                    "stated, with its error measured by reading the output back.")
    ex.add_argument("checkpoint", metavar="DIR", help="a checkpoint folder written by `sparsekit compress`")
    ex.add_argument("--to", required=True, choices=["compressed-tensors", "gguf"], help="target format")
    ex.add_argument("--out", required=True, help="new folder (compressed-tensors) or FILE.gguf (gguf)")
    ex.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                    help="of the tensors that stay floating, and of compressed-tensors' scales [float16: holds "
                         "sparsekit's fp16 scales exactly]")
    ex.add_argument("--json", metavar="FILE", default=None, help="write the export summary as JSON ('-' for stdout)")
    ex.add_argument("--quiet", action="store_true", help="no log lines")
    ex.set_defaults(func=_cmd_export)
    return parser


def _print_report(report: dict, out) -> None:
    print(f"model     {report['model']}  ({report['dtype']}, {report['device']})", file=out)
    proto = report["protocol"]
    for name, value in report["ppl"].items():
        windows = proto["ppl"][name]["windows"]
        print(f"ppl       {name:<10} {value:10.4f}   ({windows} windows x {proto['seqlen']} tokens, "
              f"{report['tokens'][name]} scored)", file=out)
    for task, metrics in (report.get("tasks") or {}).items():
        print(f"task      {task:<14} " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()), file=out)
    print(f"sparsity  {report['sparsity']:.4f}", file=out)
    print(f"bytes     {report['bytes']:,}", file=out)


def _cmd_eval(args: argparse.Namespace) -> int:
    import shlex

    from sparsekit.api import evaluate

    ppl = args.ppl if args.ppl is not None else ([] if args.tasks else ["wikitext2"])
    report = evaluate(args.model, ppl=ppl, tasks=args.tasks, seqlen=args.seqlen, limit=args.limit,
                      batch_size=args.batch_size, device=args.device, dtype=args.dtype, data_dir=args.data_dir,
                      progress=not args.quiet, backend=args.backend)
    report["command"] = "sparsekit " + shlex.join(args.argv)
    if args.json != "-":
        _print_report(report, sys.stdout)
    _emit_json(args.json, report)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import shlex

    from sparsekit.api import benchmark

    report = benchmark(args.model, prefill=args.prefill, decode=args.decode, batch=args.batch, repeats=args.repeats,
                   compile=args.compile, device=args.device, dtype=args.dtype, backend=args.backend)
    report["command"] = "sparsekit " + shlex.join(args.argv)
    if args.json != "-":
        b = report["bench"]
        print(f"model     {report['model']}  ({report['dtype']}, {report['device']})")
        print(f"prefill   {b['prefill']['tokens']} tokens: {b['prefill']['median_ms']:.1f} ms median "
              f"(min {b['prefill']['min_ms']:.1f}, max {b['prefill']['max_ms']:.1f}, {b['prefill']['runs']} runs)")
        print(f"decode    {b['decode']['tokens_per_s']:.1f} tokens/s median ({b['decode']['tokens_per_s_min']:.1f}.."
              f"{b['decode']['tokens_per_s_max']:.1f}), batch {b['batch']}")
        print(f"memory    {report['peak_mem_bytes']:,} bytes peak")
        energy = (f"not measured ({b.get('energy_note') or 'no counter'})" if report["joules_per_token"] is None
                  else f"{report['joules_per_token']:.4f} J/token ({b.get('energy_source')})")
        print(f"energy    {energy}")
        print(f"bytes     {report['bytes']:,}")
        print(f"lm head   {report['lm_head']}")
    _emit_json(args.json, report)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from sparsekit.sweep import finished, markdown_table, run_sweep

    if args.table:
        print(markdown_table(args.out))
        return 0
    if not args.grid:
        raise SparsekitError("--grid GRID.yaml is required to run a sweep (--table alone prints DIR's finished points)")
    report = run_sweep(args.grid, args.out, progress=not args.quiet, executor=args.executor, address=args.address,
                       cpus_per_point=args.cpus_per_point, gpus_per_point=args.gpus_per_point)
    print(f"points    {len(finished(report.parent))} in {report.parent / 'points.jsonl'}")
    print(f"report    {report}")
    return 0


def _emit_json(target: str | None, obj: dict) -> None:
    """`--json FILE` (written atomically) or `--json -` (stdout instead of the human summary)."""
    import json

    from sparsekit.utils.io import write_json_atomic

    if target == "-":
        json.dump(obj, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif target:
        write_json_atomic(target, obj)


def _print_compressed(compressed, out_dir: str, out) -> None:
    print(f"recipe    {compressed.recipe.describe()}", file=out)
    for i, step in enumerate(compressed.steps):
        print(f"step {i + 1}    {step.step}{step.summary()}", file=out)
    print(f"sparsity  {compressed.sparsity:.4f}", file=out)
    if compressed.storage:
        bits = compressed.storage
        shapes = {n: mod.shape for st in compressed.steps for n, mod in st.modules.items()}
        sizes = {n: math.prod(shapes[n]) for n in bits}
        mean = sum(bits[n] * sizes[n] for n in bits) / sum(sizes.values())
        print(f"packed    {mean:.3f} bits per projection weight (codes, scales, sparsity metadata)", file=out)
    if compressed.packed:
        kinds: dict[str, int] = {}
        for what in compressed.packed.values():
            key = what.split(":")[0] + (" (" + what.split(": ", 1)[1] + ")" if what.startswith("dense") else "")
            kinds[key] = kinds.get(key, 0) + 1
        print("modules   " + ", ".join(f"{n} {k}" for k, n in kinds.items()), file=out)
    print(f"saved     {out_dir}", file=out)


def _cmd_compress(args: argparse.Namespace) -> int:
    import shlex

    from sparsekit.api import convert, save
    from sparsekit.checkpoint import check_out_dir
    from sparsekit.recipe import builtin_recipes, load_recipe

    if args.recipe == "list":
        for name, steps in builtin_recipes().items():
            print(f"{name:<22} {steps}")
        return 0
    if not args.out:
        raise SparsekitError("--out DIR is required: the folder the compressed checkpoint is written to")
    recipe = load_recipe(args.recipe)  # bad recipes and bad --out fail before any loading
    check_out_dir(args.out)
    command = "sparsekit " + shlex.join(args.argv)
    compressed = convert(args.model, recipe, calib=args.calib, nsamples=args.nsamples, seqlen=args.seqlen,
                         seed=args.seed, device=args.device, dtype=args.dtype, data_dir=args.data_dir,
                         progress=not args.quiet, calib_batch_size=args.calib_batch_size,
                         calib_dtype=args.calib_dtype)
    out_dir = save(compressed, args.out, command=command)
    if args.json != "-":
        _print_compressed(compressed, out_dir, sys.stdout)
    _emit_json(args.json, {**compressed.metadata(), "out": out_dir, "command": command})
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import shlex

    from sparsekit.export import export

    summary = export(args.checkpoint, args.to, args.out, dtype=args.dtype)
    summary["command"] = "sparsekit " + shlex.join(args.argv)
    if args.json != "-":
        print(f"source    {summary['source']} ({summary.get('base_model')})")
        if args.to == "gguf":
            types = ", ".join(f"{n} {t}" for t, n in sorted(summary["tensor_types"].items()))
            print(f"tensors   {types}; tokenizer pre-split '{summary['tokenizer_pre']}'")
            print(f"exact     {summary['exact_quantized']} quantized tensors bit-exact, {summary['inexact_quantized']} "
                  f"re-encoded (errors in the --json summary)")
        else:
            for sch in summary["schemes"]:
                print(f"scheme    int{sch['bits']} {'symmetric' if sch['symmetric'] else 'asymmetric'} group "
                      f"{sch['group_size']}: {sch['modules']} projections")
            for line in summary["regrouped"]:
                print(f"note      {line}")
        if summary["patterns"]:
            print(f"sparsity  {', '.join(summary['patterns'])} kept as exact zeros (the format has no sparsity field)")
        print(f"saved     {args.out}")
    _emit_json(args.json, summary)
    return 0


def _setup_logging(quiet: bool) -> None:
    """Log lines of the sparsekit package go to stderr as 'sparsekit: ...' (one handler, however often main runs)."""
    log = logging.getLogger("sparsekit")
    for handler in [h for h in log.handlers if getattr(h, "_sparsekit_cli", False)]:
        log.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("sparsekit: %(message)s"))
    handler._sparsekit_cli = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    _setup_logging(args.quiet)
    try:
        import transformers

        transformers.logging.set_verbosity_error()  # its per-tensor GGUF chatter is not ours to show
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
        if args.quiet:
            transformers.logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        return args.func(args)
    except SparsekitError as exc:
        print(f"sparsekit {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"sparsekit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
