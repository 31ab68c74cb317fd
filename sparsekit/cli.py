"""The `sparsekit` command (DESIGN.md §8): a thin layer over `sparsekit.api`.

Contract: bad input (unknown model, missing data set, bad option value) ends with exit code 2 and a
single line `sparsekit <cmd>: error: <what is wrong and how to fix it>` on stderr; nothing
half-written is left behind (`--json` is written atomically at the end).
"""

from __future__ import annotations

import argparse
import logging
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sparsekit", description="Prune and quantize LLMs; measure accuracy, speed, memory.")
    parser.add_argument("--version", action="version", version=f"sparsekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    ev = sub.add_parser("eval", help="perplexity (and later zero-shot tasks) of a model or compressed checkpoint",
                        description="Evaluate a model: WikiText-2 / C4 perplexity with the Wanda/SparseGPT protocol.")
    _add_model_options(ev)
    ev.add_argument("--ppl", type=_csv, default=["wikitext2"], help="perplexity data sets: wikitext2,c4 [wikitext2]")
    ev.add_argument("--seqlen", type=_positive_int, default=2048, help="window length in tokens [2048]")
    ev.add_argument("--limit", type=_positive_int, default=None, help="score only the first N windows per data set")
    ev.add_argument("--batch-size", type=_positive_int, default=1, help="windows per forward pass [1]")
    ev.set_defaults(func=_cmd_eval)
    return parser


def _print_report(report: dict, out) -> None:
    print(f"model     {report['model']}  ({report['dtype']}, {report['device']})", file=out)
    proto = report["protocol"]
    for name, value in report["ppl"].items():
        windows = proto["ppl"][name]["windows"]
        print(f"ppl       {name:<10} {value:10.4f}   ({windows} windows x {proto['seqlen']} tokens, "
              f"{report['tokens'][name]} scored)", file=out)
    print(f"sparsity  {report['sparsity']:.4f}", file=out)
    print(f"bytes     {report['bytes']:,}", file=out)


def _cmd_eval(args: argparse.Namespace) -> int:
    import json
    import shlex

    from sparsekit.api import evaluate
    from sparsekit.utils.io import write_json_atomic

    report = evaluate(args.model, ppl=args.ppl, seqlen=args.seqlen, limit=args.limit, batch_size=args.batch_size,
                      device=args.device, dtype=args.dtype, data_dir=args.data_dir, progress=not args.quiet)
    report["command"] = "sparsekit " + shlex.join(args.argv)
    if args.json == "-":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_report(report, sys.stdout)
        if args.json:
            write_json_atomic(args.json, report)
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
