"""The command-line contract (docs/ARCHITECTURE.md §8): report keys, exit code 2 with one clear line on bad input."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from sparsekit.api import REPORT_KEYS, evaluate
from sparsekit.cli import main


def _err_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def test_eval_json_has_the_stable_keys(tiny_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "r" / "out.json"
    rc = main(["eval", str(tiny_dir), "--ppl", "wikitext2,c4", "--seqlen", "64", "--limit", "3",
               "--data-dir", str(data_dir), "--json", str(out), "--quiet"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert set(REPORT_KEYS) <= set(report)
    assert set(report["ppl"]) == {"wikitext2", "c4"} and all(math.isfinite(v) for v in report["ppl"].values())
    assert report["tokens"] == {"wikitext2": 3 * 63, "c4": 3 * 63}
    assert report["tasks"] == {} and report["recipe"] is None and report["latency_ms"] is None
    assert 0.0 <= report["sparsity"] < 0.01 and report["bytes"] > 0
    assert report["versions"]["torch"] and report["protocol"]["limit"] == 3
    assert report["command"].startswith("sparsekit eval ")
    printed = capsys.readouterr().out
    assert f"{report['ppl']['wikitext2']:.4f}" in printed  # what is printed is what is saved
    assert [p.name for p in out.parent.iterdir()] == ["out.json"]  # no temporary files left behind


def test_cli_equals_api(tiny_dir, data_dir, capsys):
    assert main(["eval", str(tiny_dir), "--seqlen", "32", "--limit", "2", "--data-dir", str(data_dir),
                 "--json", "-", "--quiet"]) == 0
    cli = json.loads(capsys.readouterr().out)
    api = evaluate(str(tiny_dir), seqlen=32, limit=2, data_dir=data_dir, progress=False)
    assert cli["ppl"] == api["ppl"] and cli["tokens"] == api["tokens"]


# needs_data: evaluate() reads the text before it loads the model, so only those errors need the data
# folder; the others (argument parsing, an unknown data set name, no data at all) run without it.
@pytest.mark.parametrize("argv, expected, needs_data", [
    (["eval", "/no/such/model/dir"], "does not exist", True),
    (["eval", "MODEL", "--seqlen", "0"], "expected a positive integer", False),
    (["eval", "MODEL", "--seqlen", "abc"], "expected a positive integer", False),
    (["eval", "MODEL", "--seqlen", "100000"], "exceeds the model's context", True),
    (["eval", "MODEL", "--ppl", "ptb"], "unknown perplexity data set 'ptb'", False),
    (["eval", "MODEL", "--limit", "-1"], "expected a positive integer", False),
    (["eval", "MODEL", "--device", "tpu"], "unknown device", True),
    (["eval", "MODEL", "--seqlen", "100000", "--data-dir", "EMPTY"], "WikiText-2 raw not found", False),
    (["frobnicate"], "invalid choice", False),
    (["eval", "MODEL", "--backend", "gpu"], "invalid choice", False),
    (["eval", "MODEL", "--backend", "cpu_a8"], "no packed module of this model has a kernel for it", True),
])
def test_bad_input_exit_code_2_one_line(argv, expected, needs_data, tiny_dir, tmp_path, capsys, monkeypatch, request):
    if needs_data:
        monkeypatch.setenv("SPARSEKIT_DATA", str(request.getfixturevalue("data_dir")))
    else:  # prove it: no data folder anywhere
        monkeypatch.delenv("SPARSEKIT_DATA", raising=False)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = [str(tiny_dir) if a == "MODEL" else str(tmp_path) if a == "EMPTY" else a for a in argv]
    json_path = tmp_path / "never.json"
    with pytest.raises(SystemExit) as info:
        sys.exit(main([*argv, "--json", str(json_path), "--quiet"] if argv[0] == "eval" else argv))
    assert info.value.code == 2
    line = _err_line(capsys)
    assert expected in line and line.startswith("sparsekit")
    assert not json_path.exists()


def test_installed_entry_point(tmp_path):
    exe = shutil.which("sparsekit", path=os.path.dirname(sys.executable)) or shutil.which("sparsekit")
    assert exe, "the sparsekit console script is not installed (pip install -e .)"
    # an unknown data set name fails before any data or model is read: no data folder needed
    env = {k: v for k, v in os.environ.items() if k != "SPARSEKIT_DATA"}
    proc = subprocess.run([exe, "eval", str(tmp_path / "missing"), "--ppl", "ptb"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown perplexity data set 'ptb'" in proc.stderr
    assert subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.startswith("sparsekit ")


@pytest.mark.slow
def test_default_model_eval_end_to_end(data_dir, tmp_path):
    """The README's main job, shortened: the real model through the installed command."""
    out = tmp_path / "dense.json"
    exe = shutil.which("sparsekit", path=os.path.dirname(sys.executable)) or shutil.which("sparsekit")
    proc = subprocess.run([exe, "eval", "smollm2-135m", "--ppl", "wikitext2", "--seqlen", "256", "--limit", "2",
                           "--json", str(out), "--quiet", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["model"] == "smollm2-135m" and report["tokens"]["wikitext2"] == 2 * 255
    # A trained 135M model is far better than chance (vocab 49152) and worse than a perfect predictor.
    assert 5.0 < report["ppl"]["wikitext2"] < 100.0
    assert report["bytes"] == 538_060_032  # 134.5M fp32 parameters, tied embedding counted once
