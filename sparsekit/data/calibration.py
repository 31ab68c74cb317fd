"""Deterministic calibration windows: `nsamples` random windows of `seqlen` tokens, seeded.

The sampling is SparseGPT's (`get_c4` / `get_wikitext2`): for C4, pick a random document longer
than `seqlen` tokens, then a random window inside it; for WikiText-2, random windows of the
tokenized concatenated text. A private `random.Random(seed)` drives it, so the result depends only
on (source, tokenizer, nsamples, seqlen, seed) and not on global RNG state.

`packed_windows` draws training windows instead (healing): every document, in a seeded order, joined
by the end-of-text token and cut into consecutive windows, so that no token repeats before all have
been used once (SparseGPT's draw picks a document uniformly, whatever its length, and only those longer
than a window: 548 of the 2,000 C4 documents at 512 tokens, 69% of the sample's tokens;
`bench/experiments/heal_windows.py` counts what each draw holds).
"""

from __future__ import annotations

import os
import random

import torch

from sparsekit.data.datasets import c4_documents, wikitext2_text
from sparsekit.errors import SparsekitError

CALIBRATION_SOURCES = ("c4", "wikitext2")


def _tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, verbose=False)["input_ids"]


def calibration_texts(source: str = "c4", data_dir: str | os.PathLike | None = None) -> list[str]:
    """The raw texts windows are drawn from: C4 documents, or the WikiText-2 validation text as one item."""
    if source == "c4":
        return c4_documents("calibration", data_dir)
    if source == "wikitext2":
        return [wikitext2_text("validation", data_dir)]
    raise SparsekitError(f"unknown calibration source {source!r}: use one of {', '.join(CALIBRATION_SOURCES)}")


def _check_counts(nsamples: int, seqlen: int) -> None:
    if nsamples < 1:
        raise SparsekitError(f"nsamples must be >= 1, got {nsamples}")
    if seqlen < 2:
        raise SparsekitError(f"seqlen must be >= 2 tokens, got {seqlen}")


def document_draw(lengths: list[int], nsamples: int, seqlen: int, seed: int) -> list[tuple[int, int]]:
    """SparseGPT's C4 sampler on documents of these token `lengths`: (document index, window start) of each of
    `nsamples` windows, a document picked uniformly among those longer than `seqlen`, then a start in it."""
    eligible = [i for i, length in enumerate(lengths) if length > seqlen]
    rng = random.Random(seed)
    draws = []
    for _ in range(nsamples):
        i = eligible[rng.randrange(len(eligible))]
        draws.append((i, rng.randrange(lengths[i] - seqlen)))
    return draws


def calibration_windows(tokenizer, source: str = "c4", *, nsamples: int = 128, seqlen: int = 2048,
                        seed: int = 0, data_dir: str | os.PathLike | None = None,
                        texts: list[str] | None = None) -> torch.Tensor:
    """Return a LongTensor `[nsamples, seqlen]` of token ids for calibration.

    Args:
        source: 'c4' (the 2,000-doc C4 validation sample) or 'wikitext2' (the validation split:
            the test split is never used for calibration).
        texts: `calibration_texts(source)` when already read (e.g. to fail early on missing data).
    """
    _check_counts(nsamples, seqlen)
    texts = calibration_texts(source, data_dir) if texts is None else texts
    if source == "c4":
        docs = _tokenize(tokenizer, texts)
        longest = max(len(ids) for ids in docs)
        if longest <= seqlen:
            raise SparsekitError(f"no C4 calibration document is longer than seqlen={seqlen} tokens (longest: "
                                 f"{longest}); use a smaller --seqlen or --calib wikitext2")
        windows = [docs[i][start:start + seqlen]
                   for i, start in document_draw([len(ids) for ids in docs], nsamples, seqlen, seed)]
    elif source == "wikitext2":
        rng = random.Random(seed)
        ids = _tokenize(tokenizer, texts[:1])[0]
        if len(ids) <= seqlen:
            raise SparsekitError(f"WikiText-2 validation has {len(ids)} tokens, fewer than seqlen={seqlen}")
        windows = []
        for _ in range(nsamples):
            start = rng.randrange(len(ids) - seqlen)
            windows.append(ids[start:start + seqlen])
    return torch.tensor(windows, dtype=torch.long)


def packed_windows(tokenizer, source: str = "c4", *, nsamples: int, seqlen: int, seed: int = 0,
                   data_dir: str | os.PathLike | None = None, texts: list[str] | None = None) -> torch.Tensor:
    """A LongTensor `[nsamples, seqlen]` of consecutive windows over every document of `source`, packed.

    The documents are shuffled (seeded), joined with the tokenizer's end-of-text token between them (none
    where it has none) and cut into windows; a request for more windows than one pass holds starts a new
    pass in a new order, so each token is used once per pass. WikiText-2 validation is one text: its
    windows are consecutive slices from a seeded start."""
    _check_counts(nsamples, seqlen)
    texts = calibration_texts(source, data_dir) if texts is None else texts
    docs = [ids for ids in _tokenize(tokenizer, texts) if ids]
    eos = getattr(tokenizer, "eos_token_id", None)
    sep = [] if eos is None else [int(eos)]
    total = sum(len(ids) + len(sep) for ids in docs)
    if total < seqlen:
        raise SparsekitError(f"the {source} sample holds {total} tokens, fewer than one window of seqlen={seqlen}")
    rng = random.Random(seed)
    windows: list[list[int]] = []
    while len(windows) < nsamples:
        order = list(range(len(docs)))
        rng.shuffle(order)
        stream = [t for i in order for t in (*docs[i], *sep)]
        start = rng.randrange(len(stream) % seqlen + 1)  # a seeded offset: the pass's leftover tokens at either end
        for pos in range(start, len(stream) - seqlen + 1, seqlen):
            windows.append(stream[pos:pos + seqlen])
    return torch.tensor(windows[:nsamples], dtype=torch.long)
