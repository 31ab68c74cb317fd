import hashlib

import pytest
import torch

from collections import Counter

from sparsekit.data import (c4_documents, calibration_windows, packed_windows, perplexity_set, read_texts,
                            wikitext2_rows, wikitext2_text)
from sparsekit.errors import DataNotFoundError, SparsekitError
from tests.tiny import tiny_tokenizer

# SOURCES.md: the HF-style perplexity text is 1,294,336 characters with this sha256.
WIKITEXT2_TEST_SHA256 = "696cca6b65a171b0a358a4be6732cdfdf2dd6164a32e20fd70e3c13fc4dfae83"


def test_wikitext2_text_matches_the_papers_text(data_dir):
    rows = wikitext2_rows("test", data_dir)
    assert len(rows) == 4358 and rows[0] == "" and rows[1] == " = Robert Boulter = \n"
    text = wikitext2_text("test", data_dir)
    assert len(text) == 1294336
    assert hashlib.sha256(text.encode()).hexdigest() == WIKITEXT2_TEST_SHA256


def test_env_var_is_used(data_dir, monkeypatch):
    monkeypatch.setenv("SPARSEKIT_DATA", str(data_dir))
    assert len(wikitext2_rows("validation")) > 3000


def test_c4_readers(data_dir):
    calib = c4_documents("calibration", data_dir)
    evald = c4_documents("eval", data_dir)
    assert len(calib) == 2000 and len(evald) == 1025
    assert all(isinstance(t, str) and t for t in calib[:50])


def test_read_texts_formats(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n\n{"text": "y"}\n')
    (tmp_path / "a.json").write_text('[{"text": "x"}, {"text": "y"}]')
    assert read_texts(tmp_path / "a.jsonl") == read_texts(tmp_path / "a.json") == ["x", "y"]
    with pytest.raises(SparsekitError, match="expected a .jsonl"):
        read_texts(tmp_path / "a.csv")


def test_missing_data_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("SPARSEKIT_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataNotFoundError) as info:
        wikitext2_text("test", tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "wikitext-2-raw" / "wiki.test.raw") in msg and "SPARSEKIT_DATA" in msg
    assert "\n" not in msg
    with pytest.raises(DataNotFoundError, match="no data folder given"):
        c4_documents("eval")


def test_unknown_names():
    with pytest.raises(SparsekitError, match="use one of wikitext2, c4"):
        perplexity_set("ptb")
    with pytest.raises(SparsekitError, match="unknown WikiText-2 split"):
        wikitext2_rows("train")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.mark.parametrize("source", ["c4", "wikitext2"])
def test_calibration_windows_are_deterministic_slices(tok, data_dir, source):
    a = calibration_windows(tok, source, nsamples=6, seqlen=32, seed=0, data_dir=data_dir)
    b = calibration_windows(tok, source, nsamples=6, seqlen=32, seed=0, data_dir=data_dir)
    c = calibration_windows(tok, source, nsamples=6, seqlen=32, seed=1, data_dir=data_dir)
    assert a.shape == (6, 32) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    if source == "wikitext2":  # every window is a contiguous slice of the tokenized validation text
        stream = tok(wikitext2_text("validation", data_dir)).input_ids
        joined = ",".join(map(str, stream))
        for row in a.tolist():
            assert ",".join(map(str, row)) in joined


def test_packed_windows_use_every_token_once_a_pass(tok, data_dir):
    """One pass of packed windows holds every C4 token (and one end-of-text token a document) at most once and
    leaves out fewer than a window's worth; more windows than a pass start another pass, seeded."""
    docs = [ids for ids in tok(c4_documents("calibration", data_dir)).input_ids if ids]
    tokens = Counter(t for ids in docs for t in ids) + Counter({tok.eos_token_id: len(docs)})
    seqlen = 256
    n_pass = sum(tokens.values()) // seqlen
    one = packed_windows(tok, "c4", nsamples=n_pass, seqlen=seqlen, seed=3, data_dir=data_dir)
    assert one.shape == (n_pass, seqlen) and one.dtype == torch.long
    used = Counter(one.flatten().tolist())
    assert not used - tokens  # nothing used more often than the sample holds it
    assert sum((tokens - used).values()) < seqlen
    again = packed_windows(tok, "c4", nsamples=n_pass + 5, seqlen=seqlen, seed=3, data_dir=data_dir)
    assert torch.equal(again[:n_pass], one) and again.shape[0] == n_pass + 5
    assert not torch.equal(packed_windows(tok, "c4", nsamples=4, seqlen=seqlen, seed=4, data_dir=data_dir), one[:4])
    with pytest.raises(SparsekitError, match="fewer than one window of seqlen=10000000"):
        packed_windows(tok, "c4", nsamples=1, seqlen=10_000_000, data_dir=data_dir)
    with pytest.raises(SparsekitError, match="nsamples must be >= 1"):
        packed_windows(tok, "c4", nsamples=0, seqlen=8, data_dir=data_dir)


def test_calibration_errors(tok, data_dir):
    with pytest.raises(SparsekitError, match="no C4 calibration document is longer than seqlen=10000000"):
        calibration_windows(tok, "c4", nsamples=1, seqlen=10_000_000, data_dir=data_dir)
    with pytest.raises(SparsekitError, match="nsamples must be >= 1"):
        calibration_windows(tok, "c4", nsamples=0, data_dir=data_dir)
    with pytest.raises(SparsekitError, match="unknown calibration source"):
        calibration_windows(tok, "pile", nsamples=1, seqlen=8, data_dir=data_dir)
