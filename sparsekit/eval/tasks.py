"""Zero-shot tasks from the local files of `shared/data`, as lm-evaluation-harness tasks, offline.

Each task reads its file (SOURCES.md says where each comes from), turns every example into the schema
of the Hugging Face dataset the official harness task reads, and uses that task's prompt, choices,
target and metrics (checked against lm-eval 0.4's YAMLs):

| task          | file                                     | prompt (context)                                       | metrics               |
|---------------|------------------------------------------|--------------------------------------------------------|-----------------------|
| arc_easy      | arc_easy/ARC-Easy-Test.jsonl (2376)      | "Question: {question}\\nAnswer:"                         | acc, acc_norm         |
| arc_challenge | arc_challenge/ARC-Challenge-Test.jsonl (1172) | as arc_easy                                       | acc, acc_norm         |
| boolq         | boolq/val.jsonl (3270)                   | "{passage}\\nQuestion: {question}?\\nAnswer:" no / yes   | acc                   |
| rte           | rte/glue_rte_validation.parquet (277)    | "{s1}\\nQuestion: {s2} True or False?\\nAnswer:"         | acc                   |
| hellaswag     | hellaswag/hellaswag_val_full.txt.bz2 (10042) | "{activity}: {ctx}" -> 4 endings                   | acc, acc_norm         |
| winogrande    | winogrande/winogrande_xl_validation.jsonl (1267) | partial scoring: 2 contexts, 1 continuation    | acc                   |
| openbookqa    | openbookqa/test.jsonl (500)              | "{question_stem}"                                      | acc, acc_norm         |
| piqa          | piqa/valid_with_labels.jsonl (1838)      | "Question: {goal}\\nAnswer:"                             | acc, acc_norm         |
| lambada       | lambada/lambada_test.jsonl (5153)        | text minus its last word -> " last word"               | perplexity, acc       |

Differences from the official tasks, by the data we have: HellaSwag's file is a derived text format
whose context is `ctx` after llama.cpp-style cleaning instead of the harness's `ctx_a + " " +
ctx_b.capitalize()` (scores are close, not identical); RTE uses GLUE's file (the harness's `rte` task
is GLUE's, labels 0 = entailment = "True"); LAMBADA is OpenAI's version (`lambada_openai`).
"""

from __future__ import annotations

import bz2
import json
import os
from pathlib import Path
from typing import Callable

from sparsekit.data.datasets import _find, _not_found
from sparsekit.errors import SparsekitError

ACC = {"metric": "acc", "aggregation": "mean", "higher_is_better": True}
ACC_NORM = {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _ai2(path: Path) -> list[dict]:
    """ARC / OpenBookQA original files -> the HF schema (question, choices {text, label}, answerKey)."""
    out = []
    for d in _jsonl(path):
        q = d["question"]
        out.append({"id": d["id"], "question": q["stem"], "question_stem": q["stem"],
                    "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]},
                    "answerKey": d["answerKey"]})
    return out


_TRUTH = {"true": 1, "false": 0, 1: 1, 0: 0}  # True / False hash as 1 / 0


def _boolq(path: Path) -> list[dict]:
    """BoolQ with its label as the harness's 0 = no / 1 = yes; the SuperGLUE file spells it "true"/"false"
    (a string: `bool("false")` is True, so it must be read, not cast)."""
    out = []
    for d in _jsonl(path):
        label = d["label"].lower() if isinstance(d["label"], str) else d["label"]
        if label not in _TRUTH:
            raise SparsekitError(f"{path}: BoolQ label {d['label']!r} is none of true/false/1/0")
        out.append({"question": d["question"], "passage": d["passage"], "label": _TRUTH[label]})
    return out


def _rte(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _hellaswag(path: Path) -> list[dict]:
    lines = bz2.decompress(path.read_bytes()).decode("utf-8").split("\n")
    out = []
    for i in range(0, len(lines) - 5, 6):
        out.append({"query": lines[i], "label": int(lines[i + 1]), "choices": lines[i + 2:i + 6]})
    return out


def _plain(path: Path) -> list[dict]:
    return _jsonl(path)


# harness functions of the tasks that need code rather than a template
def _wino_text(doc: dict) -> int:
    return {"1": 0, "2": 1}[doc["answer"]]


def _wino_target(doc: dict) -> str:
    return doc["sentence"][doc["sentence"].index("_") + 1:].strip()


def _wino_choice(doc: dict) -> list[str]:
    cut = doc["sentence"].index("_")
    return [doc["sentence"][:cut] + opt for opt in (doc["option1"], doc["option2"])]


_ARC = {"doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": "{{choices.label.index(answerKey)}}",
        "doc_to_choice": "{{choices.text}}", "metric_list": [ACC, ACC_NORM]}

#: task -> (relative file, reader, harness config, official example count)
TASKS: dict[str, tuple[str, Callable[[Path], list[dict]], dict, int]] = {
    "arc_easy": ("arc_easy/ARC-Easy-Test.jsonl", _ai2, _ARC, 2376),
    "arc_challenge": ("arc_challenge/ARC-Challenge-Test.jsonl", _ai2, _ARC, 1172),
    "boolq": ("boolq/val.jsonl", _boolq,
              {"doc_to_text": "{{passage}}\nQuestion: {{question}}?\nAnswer:", "doc_to_target": "label",
               "doc_to_choice": ["no", "yes"], "metric_list": [ACC]}, 3270),
    "rte": ("rte/glue_rte_validation.parquet", _rte,
            {"doc_to_text": "{{sentence1}}\nQuestion: {{sentence2}} True or False?\nAnswer:", "doc_to_target": "label",
             "doc_to_choice": ["True", "False"], "metric_list": [ACC]}, 277),
    "hellaswag": ("hellaswag/hellaswag_val_full.txt.bz2", _hellaswag,
                  {"doc_to_text": "{{query}}", "doc_to_target": "{{label}}", "doc_to_choice": "choices",
                   "metric_list": [ACC, ACC_NORM]}, 10042),
    "winogrande": ("winogrande/winogrande_xl_validation.jsonl", _plain,
                   {"doc_to_text": _wino_text, "doc_to_target": _wino_target, "doc_to_choice": _wino_choice,
                    "metric_list": [ACC]}, 1267),
    "openbookqa": ("openbookqa/test.jsonl", _ai2,
                   {"doc_to_text": "{{question_stem}}", "doc_to_target": "{{choices.label.index(answerKey.lstrip())}}",
                    "doc_to_choice": "{{choices.text}}", "metric_list": [ACC, ACC_NORM]}, 500),
    "piqa": ("piqa/valid_with_labels.jsonl", _plain,
             {"doc_to_text": "Question: {{goal}}\nAnswer:", "doc_to_target": "label",
              "doc_to_choice": "{{[sol1, sol2]}}", "metric_list": [ACC, ACC_NORM]}, 1838),
    "lambada": ("lambada/lambada_test.jsonl", _plain,
                {"output_type": "loglikelihood", "doc_to_text": "{{text.split(' ')[:-1]|join(' ')}}",
                 "doc_to_target": "{{' '+text.split(' ')[-1]}}", "target_delimiter": "",
                 "metric_list": [{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                                 ACC]}, 5153),
}


def headline(metrics: dict[str, float]) -> float:
    """The one accuracy reported per task: acc_norm where the task has it (length-normalised, as the
    Wanda / SparseGPT tables report ARC, HellaSwag, OpenBookQA, PIQA), else acc."""
    return metrics.get("acc_norm", metrics["acc"])


def task_file(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Where the task's file is (data_dir, then $SPARSEKIT_DATA); a clear error naming where it looked."""
    if name not in TASKS:
        raise SparsekitError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    path = _find(TASKS[name][0], data_dir)
    if path is None:
        raise _not_found(f"task {name}", TASKS[name][0], data_dir, None)
    return path


def task_docs(name: str, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """The examples of a task in the schema its harness config reads."""
    return TASKS[name][1](task_file(name, data_dir))


def build_task(name: str, data_dir: str | os.PathLike | None = None):
    """An lm-eval `ConfigurableTask` reading the local file (no download)."""
    import datasets
    from lm_eval.api.task import ConfigurableTask

    docs = task_docs(name, data_dir)
    config = {"task": name, "test_split": "test", "output_type": "multiple_choice", "target_delimiter": " ",
              "custom_dataset": lambda **_: {"test": datasets.Dataset.from_list(docs)},
              "metadata": {"version": 1.0, "source": TASKS[name][0]}, **TASKS[name][2]}
    return ConfigurableTask(config=config)


def gold_index(name: str, doc: dict) -> int:
    """Index of the correct choice (or of the correct context, for winogrande) of a document."""
    if name == "winogrande":
        return _wino_text(doc)
    if name in ("arc_easy", "arc_challenge"):
        return doc["choices"]["label"].index(doc["answerKey"])
    if name == "openbookqa":
        return doc["choices"]["label"].index(doc["answerKey"].lstrip())
    return int(doc["label"])
