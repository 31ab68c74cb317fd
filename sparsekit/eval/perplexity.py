"""Perplexity as the Wanda / SparseGPT papers measure it.

The whole test text is tokenized once; it is cut into non-overlapping windows of `seqlen` tokens
(the tail shorter than a window is dropped); each window is scored on its own (no context carried
over), and perplexity is exp of the mean next-token NLL over every scored token. The papers write it
as exp(sum_w seqlen * mean_nll_w / (n_windows * seqlen)); since every window scores the same number
(seqlen - 1) of tokens, that equals exp(mean token NLL), which is what is computed here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sparsekit.errors import SparsekitError


@dataclass(frozen=True)
class PerplexityResult:
    ppl: float
    nll: float          # mean next-token negative log-likelihood (nats)
    tokens: int         # tokens scored: windows * (seqlen - 1)
    windows: int
    seqlen: int

    def as_dict(self) -> dict:
        return asdict(self)


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def check_seqlen(model: torch.nn.Module, seqlen: int) -> None:
    """Raise a clear error for a window the model cannot take."""
    if not isinstance(seqlen, int) or seqlen < 2:
        raise SparsekitError(f"seqlen must be an integer >= 2 (one token of context and one to score), got {seqlen!r}")
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if max_pos is not None and seqlen > max_pos:
        raise SparsekitError(f"seqlen={seqlen} exceeds the model's context of {max_pos} tokens "
                             f"(config.max_position_embeddings): use --seqlen {max_pos} or less")


def _windows(model: torch.nn.Module, input_ids: torch.Tensor, seqlen: int, batch_size: int, limit: int | None,
             max_windows: int | None) -> torch.Tensor:
    """The `[n_windows, seqlen]` windows a score is taken over, the settings checked."""
    check_seqlen(model, seqlen)
    if batch_size < 1:
        raise SparsekitError(f"batch_size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise SparsekitError(f"limit must be >= 1 window, got {limit}")
    ids = input_ids.reshape(-1)
    n_windows = ids.numel() // seqlen
    if n_windows == 0:
        raise SparsekitError(f"the text has {ids.numel()} tokens, fewer than one window of seqlen={seqlen}: "
                             "use a smaller --seqlen")
    for cap in (max_windows, limit):
        if cap is not None:
            n_windows = min(n_windows, cap)
    return ids[: n_windows * seqlen].view(n_windows, seqlen)


def _batches(windows: torch.Tensor, batch_size: int, device: torch.device, progress: bool, desc: str):
    starts = range(0, windows.shape[0], batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, total=len(starts)):
        yield windows[start:start + batch_size].to(device)


@torch.no_grad()
def perplexity_from_ids(model: torch.nn.Module, input_ids: torch.Tensor, *, seqlen: int = 2048,
                        batch_size: int = 1, limit: int | None = None, max_windows: int | None = None,
                        progress: bool = True, desc: str = "perplexity") -> PerplexityResult:
    """Perplexity of `model` on a token stream `input_ids` (`[N]` or `[1, N]`).

    Args:
        seqlen: window length in tokens.
        batch_size: windows per forward pass (results do not depend on it).
        limit: score only the first `limit` windows (the CPU protocol's `--limit`).
        max_windows: a data set's own cap (C4: 256 windows in the papers), applied before `limit`.
    """
    windows = _windows(model, input_ids, seqlen, batch_size, limit, max_windows)
    nll_sum = 0.0  # python float (double): exact enough to sum ~10^6 token losses
    for batch in _batches(windows, batch_size, _model_device(model), progress, desc):
        logits = model(input_ids=batch, use_cache=False).logits
        # Token t predicts token t+1; the last position has no target inside the window.
        nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                              batch[:, 1:].reshape(-1), reduction="sum")
        nll_sum += nll.item()
    n_windows = windows.shape[0]
    tokens = n_windows * (seqlen - 1)
    mean_nll = nll_sum / tokens
    return PerplexityResult(ppl=math.exp(mean_nll), nll=mean_nll, tokens=tokens, windows=n_windows, seqlen=seqlen)


@torch.no_grad()
def position_nll(model: torch.nn.Module, input_ids: torch.Tensor, *, seqlen: int = 2048, batch_size: int = 1,
                 limit: int | None = None, max_windows: int | None = None, progress: bool = True,
                 desc: str = "position nll") -> torch.Tensor:
    """Mean next-token NLL at each position of the windows `perplexity_from_ids` scores (same arguments):
    `[seqlen - 1]` float64, entry t the loss of predicting token t + 1 from the t + 1 tokens before it. Its
    mean is that function's `nll`; it shows where in a window a compressed model loses (e.g. past the context
    length it was healed at)."""
    windows = _windows(model, input_ids, seqlen, batch_size, limit, max_windows)
    total = torch.zeros(seqlen - 1, dtype=torch.float64)
    for batch in _batches(windows, batch_size, _model_device(model), progress, desc):
        logits = model(input_ids=batch, use_cache=False).logits
        nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1),
                              reduction="none")
        total += nll.view(batch.shape[0], seqlen - 1).double().sum(0).cpu()
    return total / windows.shape[0]


def perplexity(model: torch.nn.Module, tokenizer, text: str, **kwargs) -> PerplexityResult:
    """Tokenize `text` once (with the tokenizer's default special tokens, as the papers do) and score it."""
    ids = tokenizer(text, return_tensors="pt", verbose=False).input_ids
    return perplexity_from_ids(model, ids, **kwargs)
