"""lm-evaluation-harness bridge: any sparsekit model (dense, pruned, converted, loaded from a checkpoint) as an
lm-eval `LM`, and `run_tasks` over the local task files (`sparsekit.eval.tasks`).

Log-likelihoods follow the harness's Hugging Face model exactly where it matters for comparable scores:
trailing spaces of a context move to the continuation, the continuation's tokens are those of
tok(context + continuation) past tok(context) (no special tokens added), the input is cut from the left to
the model's context length, and `is_greedy` says whether every continuation token is the argmax.
Requests are run longest first in padded batches; a result never depends on the batch it ran in
(right padding with an attention mask; causal attention makes the real tokens blind to the padding).
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import torch
from tqdm.auto import tqdm

from sparsekit.errors import SparsekitError

try:  # lm-eval is optional: everything but the task evaluation works without it
    from lm_eval.api.model import LM as _LMBase
except ImportError:  # pragma: no cover - exercised where lm-eval is not installed
    _LMBase = object


class SparsekitLM(_LMBase):
    """An lm-eval language model over a loaded causal LM and its tokenizer."""

    def __init__(self, model: torch.nn.Module, tokenizer, *, batch_size: int = 16, max_length: int | None = None,
                 progress: bool = True) -> None:
        if _LMBase is object:
            raise SparsekitError("zero-shot tasks need lm-evaluation-harness: pip install 'lm-eval>=0.4.5'")
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.max_length = int(max_length or getattr(model.config, "max_position_embeddings", 2048) or 2048)
        self.progress = progress
        self._device = next(model.parameters()).device

    # -- tokenisation (the harness's HF conventions) -------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self._encode(context + continuation)
        ctx = self._encode(context) if context else []
        cont = whole[len(ctx):]
        if not ctx:  # an empty context is conditioned on the end-of-text token, as the harness does
            ctx = [self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0]
        return ctx, cont

    # -- the LM interface ---------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum of log p(continuation | context), is_greedy) for token-id pairs."""
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        out: list[tuple[float, bool] | None] = [None] * len(pairs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        bar = tqdm(total=len(pairs), desc="loglikelihood", unit="req", disable=not self.progress)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            seqs = [(pairs[i][0] + pairs[i][1])[-(self.max_length + 1):][:-1] for i in idx]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, :len(s)] = torch.tensor(s)
                mask[r, :len(s)] = 1
            logits = self.model(input_ids=ids.to(self._device), attention_mask=mask.to(self._device)).logits
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()
            for r, i in enumerate(idx):
                cont = pairs[i][1]
                n, length = len(cont), len(seqs[r])
                rows = logp[r, length - n:length]
                target = torch.tensor(cont)
                out[i] = (float(rows.gather(1, target[:, None]).sum()), bool((rows.argmax(-1) == target).all()))
            bar.update(len(idx))
        bar.close()
        return out  # type: ignore[return-value]

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        return self.score([self.encode_pair(*req.args) for req in requests])

    def loglikelihood_rolling(self, requests) -> list[float]:
        raise SparsekitError("rolling log-likelihood (perplexity tasks) is not part of this bridge; use "
                             "`sparsekit eval --ppl wikitext2,c4`, the papers' perplexity protocol")

    def generate_until(self, requests):
        raise SparsekitError("generation tasks are not supported by sparsekit's lm-eval bridge; the zero-shot "
                             "tasks here are all log-likelihood based")


def run_tasks(model: torch.nn.Module, tokenizer, tasks: Sequence[str], *, limit: int | None = None,
              data_dir: str | os.PathLike | None = None, batch_size: int = 16, progress: bool = True) -> dict:
    """{task: {metric: value}} for the local tasks (`limit`: the first N examples of each)."""
    from sparsekit.eval.tasks import TASKS, build_task

    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise SparsekitError(f"unknown tasks {unknown}; known: {', '.join(TASKS)}")
    lm = SparsekitLM(model, tokenizer, batch_size=batch_size, progress=progress)
    for name in ("lm-eval", "lm_eval"):
        logging.getLogger(name).setLevel(logging.ERROR)  # its per-task chatter about custom datasets is not ours
    from lm_eval.evaluator import evaluate as lm_evaluate

    task_dict = {name: build_task(name, data_dir) for name in tasks}
    results = lm_evaluate(lm=lm, task_dict=task_dict, limit=limit, bootstrap_iters=0, verbosity="ERROR")["results"]
    out = {}
    for name in tasks:
        metrics = {}
        for key, value in results[name].items():
            metric, _, flt = key.partition(",")
            if flt == "none" and not metric.endswith("_stderr") and isinstance(value, (int, float)):
                metrics[metric] = float(value)
        out[name] = metrics
    return out
