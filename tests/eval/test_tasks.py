"""Zero-shot tasks through lm-evaluation-harness: official counts, an oracle scores 1.0, log-likelihoods are
the model's, and the CLI / API carry the scores."""

import json
import math

import pytest
import torch

from sparsekit.eval.harness import SparsekitLM, run_tasks
from sparsekit.eval.tasks import TASKS, build_task, gold_index, task_docs
from tests.tiny import tiny_model, tiny_tokenizer

lm_eval = pytest.importorskip("lm_eval")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_local_files_give_the_official_example_counts(name, data_dir):
    assert len(task_docs(name, data_dir)) == TASKS[name][3]


#: gold-answer counts of the official validation sets (BoolQ: 2,033 yes / 1,237 no; RTE: 146 entailment)
GOLD_COUNTS = {"boolq": {0: 1237, 1: 2033}, "rte": {0: 146, 1: 131}, "winogrande": {0: 628, 1: 639},
               "piqa": {0: 910, 1: 928}, "arc_challenge": {0: 266, 1: 311, 2: 310, 3: 285}}


@pytest.mark.parametrize("name", sorted(GOLD_COUNTS))
def test_gold_answers_are_read_not_cast(name, data_dir):
    """An oracle scores 1.0 whatever the labels say; the label counts catch a misread file (BoolQ's
    labels are the strings "true"/"false", and `bool("false")` is True)."""
    from collections import Counter

    assert dict(Counter(gold_index(name, d) for d in task_docs(name, data_dir))) == GOLD_COUNTS[name]


class Oracle(SparsekitLM):
    """Prefers the gold answer of every request (and calls every LAMBADA target greedy)."""

    def loglikelihood(self, requests):
        out = []
        for req in requests:
            if req.task_name == "lambada":
                out.append((0.0, True))
            else:
                gold = gold_index(req.task_name, req.doc)
                out.append((0.0, True) if req.idx == gold else (-1e9, False))
        return out


def test_an_oracle_scores_one_on_every_task(data_dir):
    from lm_eval.evaluator import evaluate

    tok = tiny_tokenizer()
    lm = Oracle(tiny_model("llama", vocab_size=len(tok)), tok, progress=False)
    tasks = {name: build_task(name, data_dir) for name in TASKS}
    results = evaluate(lm=lm, task_dict=tasks, limit=40, bootstrap_iters=0)["results"]
    for name in TASKS:
        assert results[name]["acc,none"] == 1.0, name
        if "acc_norm,none" in results[name]:
            assert results[name]["acc_norm,none"] == 1.0, name
    assert results["lambada"]["perplexity,none"] == pytest.approx(1.0)


def test_loglikelihoods_equal_a_direct_forward_pass():
    tok = tiny_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok))
    lm = SparsekitLM(model, tok, batch_size=3, progress=False)
    pairs = [("The quick brown fox", " jumps over the lazy dog."), ("Sparse models ", "run fast."),
             ("A", " b c d e f g h i j k l"), ("", "Robert Boulter is an English actor.")]
    got = lm.score([lm.encode_pair(c, x) for c, x in pairs])
    for (context, cont), (logp, greedy) in zip(pairs, got):
        ctx, tgt = lm.encode_pair(context, cont)
        ids = torch.tensor([ctx + tgt])
        with torch.no_grad():
            logits = torch.log_softmax(model(ids).logits[0].float(), -1)
        rows = logits[len(ctx) - 1:-1]
        want = float(rows.gather(1, torch.tensor(tgt)[:, None]).sum())
        assert logp == pytest.approx(want, abs=1e-4)
        assert greedy == bool((rows.argmax(-1) == torch.tensor(tgt)).all())
    # trailing spaces of a context move to the continuation, as the harness does
    assert lm.encode_pair("Sparse models ", "run fast.") == lm.encode_pair("Sparse models", " run fast.")


def test_cli_eval_tasks(tiny_dir, data_dir, tmp_path, capsys):
    from sparsekit.cli import main

    out = tmp_path / "t.json"
    assert main(["eval", str(tiny_dir), "--tasks", "piqa,rte", "--limit", "4", "--data-dir", str(data_dir),
                 "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["ppl"] == {} and set(report["tasks"]) == {"piqa", "rte"}
    assert set(report["tasks"]["piqa"]) == {"acc", "acc_norm"} and 0 <= report["tasks"]["rte"]["acc"] <= 1
    assert "task      piqa" in capsys.readouterr().out


def test_unknown_task_and_missing_data(tiny_dir, tmp_path, capsys, monkeypatch):
    from sparsekit.cli import main

    monkeypatch.delenv("SPARSEKIT_DATA", raising=False)
    for argv, message in ((["--tasks", "mmlu"], "unknown task 'mmlu'"),
                          (["--tasks", "piqa", "--data-dir", str(tmp_path)], "task piqa not found")):
        assert main(["eval", str(tiny_dir), *argv, "--quiet"]) == 2
        assert message in capsys.readouterr().err


def test_run_tasks_directly(data_dir):
    tok = tiny_tokenizer()
    scores = run_tasks(tiny_model("llama", vocab_size=len(tok)), tok, ["lambada"], limit=3, data_dir=data_dir,
                       progress=False)
    assert set(scores["lambada"]) == {"perplexity", "acc"} and math.isfinite(scores["lambada"]["perplexity"])
