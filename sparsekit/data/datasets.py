"""Readers for the evaluation and calibration texts, offline first.

Search order for a data set: the `data_dir` argument, then `$SPARSEKIT_DATA`, then (only when online
and the `datasets` package is installed) the Hugging Face hub. The folder layout is the one of
`shared/data` (see its SOURCES.md):

    wikitext-2-raw/wiki.test.raw, wiki.valid.raw      WikiText-2 raw, as in wikitext-2-raw-v1.zip
    c4/c4_validation_2k.parquet                       2,000 C4 validation docs (calibration)
    c4/c4_valid_part_of_0.first1025.jsonl             1,025 C4 validation docs (approximate C4 perplexity)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sparsekit.errors import DataNotFoundError, SparsekitError

ENV_VAR = "SPARSEKIT_DATA"


def data_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for data, in order."""
    roots = [Path(data_dir).expanduser()] if data_dir else []
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]).expanduser())
    return roots


def _find(relpath: str, data_dir: str | os.PathLike | None) -> Path | None:
    for root in data_roots(data_dir):
        if (root / relpath).is_file():
            return root / relpath
    return None


def _not_found(what: str, relpath: str, data_dir, hub_error: str | None) -> DataNotFoundError:
    roots = data_roots(data_dir)
    looked = f"looked in {', '.join(str(r / relpath) for r in roots)}" if roots else \
        f"no data folder given (${ENV_VAR} unset, no --data-dir)"
    hub = f"; the Hugging Face hub fallback failed ({hub_error})" if hub_error else ""
    return DataNotFoundError(f"{what} not found: {looked}{hub}; "
                             f"set {ENV_VAR} (or --data-dir) to a folder holding {relpath}")


def _from_hub(loader: Callable[[], list[str]]) -> tuple[list[str] | None, str]:
    """Try the hub; return (rows, '') or (None, why it failed). Never raises."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return None, "offline mode is set"
    try:
        import datasets  # noqa: F401  (optional dependency)
    except ImportError:
        return None, "the 'datasets' package is not installed"
    try:
        return loader(), ""
    except Exception as exc:  # network, auth, missing config: all mean "not available here"
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


# -- WikiText-2 --------------------------------------------------------------------------------

def wikitext2_rows(split: str = "test", data_dir: str | os.PathLike | None = None) -> list[str]:
    """The rows of HF `wikitext-2-raw-v1` for `split` ('test' or 'validation'), rebuilt from the raw file.

    HF stores each line of the raw file as a row, keeping its "\\n"; blank lines (a lone space in
    the raw file) become "". Joining the rows with "\\n\\n" gives the text the papers score.
    """
    names = {"test": "test", "validation": "valid", "valid": "valid"}
    if split not in names:
        raise SparsekitError(f"unknown WikiText-2 split {split!r}: use test or validation")
    relpath = f"wikitext-2-raw/wiki.{names[split]}.raw"
    path = _find(relpath, data_dir)
    if path is not None:
        with open(path, encoding="utf-8", newline="") as fh:
            return [line if line.strip() else "" for line in fh]

    def hub() -> list[str]:
        import datasets
        hf_split = "validation" if split in ("valid", "validation") else split
        return list(datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split=hf_split)["text"])

    rows, why = _from_hub(hub)
    if rows is None:
        raise _not_found("WikiText-2 raw", relpath, data_dir, why)
    return rows


def wikitext2_text(split: str = "test", data_dir: str | os.PathLike | None = None) -> str:
    """The perplexity text of Wanda/SparseGPT: `"\\n\\n".join(rows)`."""
    return "\n\n".join(wikitext2_rows(split, data_dir))


# -- C4 ------------------------------------------------------------------------------------------

C4_CALIB = "c4/c4_validation_2k.parquet"
C4_EVAL = "c4/c4_valid_part_of_0.first1025.jsonl"


def read_texts(path: str | os.PathLike) -> list[str]:
    """The `text` field of every record of a .jsonl / .json (array) / .parquet file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        table = pq.read_table(path, columns=["text"])
        return [str(t) for t in table.column("text").to_pylist()]
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line)["text"] for line in fh if line.strip()]
    if suffix == ".json":
        with open(path, encoding="utf-8") as fh:
            return [rec["text"] for rec in json.load(fh)]
    raise SparsekitError(f"cannot read {path}: expected a .jsonl, .json or .parquet file with a 'text' field")


def c4_documents(purpose: str = "calibration", data_dir: str | os.PathLike | None = None) -> list[str]:
    """C4 validation documents: 'calibration' (2,000-doc sample) or 'eval' (1,025 docs in file order)."""
    relpath = {"calibration": C4_CALIB, "eval": C4_EVAL}.get(purpose)
    if relpath is None:
        raise SparsekitError(f"unknown C4 purpose {purpose!r}: use calibration or eval")
    path = _find(relpath, data_dir)
    if path is not None:
        return read_texts(path)

    def hub() -> list[str]:
        import datasets
        ds = datasets.load_dataset("allenai/c4", data_files={"validation": "en/c4-validation.00000-of-00008.json.gz"},
                                   split="validation")
        return list(ds["text"][:2000 if purpose == "calibration" else 1100])

    docs, why = _from_hub(hub)
    if docs is None:
        raise _not_found("C4", relpath, data_dir, why)
    return docs


def c4_text(data_dir: str | os.PathLike | None = None) -> str:
    """The C4 perplexity text of Wanda/SparseGPT: validation documents joined with a space."""
    return " ".join(c4_documents("eval", data_dir))


# -- registry used by the CLI --------------------------------------------------------------------

@dataclass(frozen=True)
class PerplexitySet:
    """A perplexity data set: its text and the cap on windows that the papers apply (None = all)."""

    name: str
    text: Callable[[str | os.PathLike | None], str]
    max_windows: int | None
    note: str


PERPLEXITY_SETS: dict[str, PerplexitySet] = {
    "wikitext2": PerplexitySet("wikitext2", lambda d: wikitext2_text("test", d), None,
                               "WikiText-2 raw test, rows joined with \\n\\n, every full window"),
    # SparseGPT/Wanda score the first 256 windows of the first 1,100 validation docs; the local file
    # holds 1,025 docs of the same shard (SOURCES.md), so the number is close to, not equal to, theirs.
    "c4": PerplexitySet("c4", c4_text, 256,
                        "C4 validation (first 1,025 docs of shard 0, joined with ' '), first 256 windows"),
}


def perplexity_set(name: str) -> PerplexitySet:
    try:
        return PERPLEXITY_SETS[name]
    except KeyError:
        raise SparsekitError(f"unknown perplexity data set {name!r}: use one of {', '.join(PERPLEXITY_SETS)}") from None
