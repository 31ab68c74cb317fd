import math
from types import SimpleNamespace

import pytest
import torch

from sparsekit.errors import SparsekitError
from sparsekit.eval import perplexity, perplexity_from_ids, position_nll
from tests.tiny import tiny_model, tiny_tokenizer


class Bigram(torch.nn.Module):
    """logits[t] = table[token t]: a model whose perplexity can be computed by hand."""

    def __init__(self, vocab: int, max_pos: int = 64):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=g, dtype=torch.float64) * 2)
        self.config = SimpleNamespace(max_position_embeddings=max_pos)

    def forward(self, input_ids, use_cache=False):
        return SimpleNamespace(logits=self.table[input_ids])


def hand_ppl(table, ids, seqlen, windows):
    nll, count = 0.0, 0
    for w in range(windows):
        chunk = ids[w * seqlen:(w + 1) * seqlen]
        for t in range(seqlen - 1):
            row = [float(v) for v in table[chunk[t]]]
            log_z = math.log(sum(math.exp(v) for v in row))
            nll += log_z - row[chunk[t + 1]]
            count += 1
    return math.exp(nll / count), count


def test_perplexity_equals_hand_computation():
    model = Bigram(vocab=7)
    ids = torch.randint(0, 7, (3 * 10 + 4,), generator=torch.Generator().manual_seed(1))  # 3 windows + tail
    res = perplexity_from_ids(model, ids, seqlen=10, progress=False)
    expected, count = hand_ppl(model.table.detach(), ids.tolist(), 10, 3)
    assert res.windows == 3 and res.tokens == count == 27
    # the loss is taken in fp32 (as the papers do), the hand computation in double
    assert res.ppl == pytest.approx(expected, rel=1e-6)
    assert res.nll == pytest.approx(math.log(expected), rel=1e-6)


def test_position_nll_is_each_positions_mean_and_averages_to_the_perplexity():
    model = Bigram(vocab=7)
    ids = torch.randint(0, 7, (4 * 9 + 5,), generator=torch.Generator().manual_seed(4))
    table = model.table.detach().tolist()
    got = position_nll(model, ids, seqlen=9, limit=3, batch_size=2, progress=False)
    assert got.shape == (8,) and got.dtype == torch.float64
    for t in range(8):  # by hand: the mean over the 3 windows of -log softmax(table[token t])[token t + 1]
        losses = []
        for w in range(3):
            a, b = int(ids[w * 9 + t]), int(ids[w * 9 + t + 1])
            losses.append(math.log(sum(math.exp(v) for v in table[a])) - table[a][b])
        assert float(got[t]) == pytest.approx(sum(losses) / 3, rel=1e-6)
    whole = perplexity_from_ids(model, ids, seqlen=9, limit=3, progress=False)
    assert float(got.mean()) == pytest.approx(whole.nll, rel=1e-6)


def test_limit_and_cap_take_the_first_windows():
    model = Bigram(vocab=5)
    ids = torch.randint(0, 5, (1, 50), generator=torch.Generator().manual_seed(2))
    limited = perplexity_from_ids(model, ids, seqlen=10, limit=2, progress=False)
    capped = perplexity_from_ids(model, ids, seqlen=10, max_windows=2, progress=False)
    direct = perplexity_from_ids(model, ids[:, :20], seqlen=10, progress=False)
    assert limited.windows == capped.windows == 2
    assert limited.ppl == capped.ppl == direct.ppl
    assert perplexity_from_ids(model, ids, seqlen=10, limit=99, progress=False).windows == 5


def test_batching_does_not_change_the_result():
    model = tiny_model("llama")
    ids = torch.randint(3, 300, (1, 5 * 16 + 3), generator=torch.Generator().manual_seed(3))
    one = perplexity_from_ids(model, ids, seqlen=16, batch_size=1, progress=False)
    three = perplexity_from_ids(model, ids, seqlen=16, batch_size=3, progress=False)
    assert one.windows == three.windows == 5
    assert three.ppl == pytest.approx(one.ppl, rel=1e-5)


def test_text_entry_point_tokenizes_once():
    tok = tiny_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok))
    text = "The quick brown fox jumps over the lazy dog. " * 20
    res = perplexity(model, tok, text, seqlen=16, progress=False)
    ids = tok(text, return_tensors="pt").input_ids
    assert res.windows == ids.shape[1] // 16
    assert res.ppl == perplexity_from_ids(model, ids, seqlen=16, progress=False).ppl


@pytest.mark.parametrize("kwargs, match", [
    ({"seqlen": 1}, "seqlen must be an integer >= 2"),
    ({"seqlen": 65}, "exceeds the model's context of 64 tokens"),
    ({"seqlen": 8, "limit": 0}, "limit must be >= 1"),
    ({"seqlen": 8, "batch_size": 0}, "batch_size must be >= 1"),
    ({"seqlen": 64}, "fewer than one window"),
])
@pytest.mark.parametrize("score", [perplexity_from_ids, position_nll])
def test_bad_settings_are_clear_errors(kwargs, match, score):
    with pytest.raises(SparsekitError, match=match):
        score(Bigram(vocab=5), torch.zeros(40, dtype=torch.long), progress=False, **kwargs)
