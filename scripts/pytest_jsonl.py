"""pytest plugin: one JSON line per test result, appended (and flushed) the moment the test finishes.

    python3 -m pytest -p pytest_jsonl --jsonl-out results.jsonl --jsonl-step cuda_ext tests/...

(`scripts/` on PYTHONPATH; scripts/gpu_check.sh sets it.) A run killed by a timeout keeps every
result before the kill, unlike --junitxml, which is written at the end. A line per test:
{"step", "nodeid", "outcome" (passed | failed | skipped | error), "when" (the phase that decided it),
"duration" (s, all phases), "longrepr" (the failure or skip reason, cut to 4000 characters)}; a
collection error is a line with "when": "collect"; the session's end is a line with "exitstatus".
"""

from __future__ import annotations

import json
import time

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("jsonl", "one JSON line per test result")
    group.addoption("--jsonl-out", default=None, help="append a JSON line per test result to this file")
    group.addoption("--jsonl-step", default="", help="a label stored in every line (e.g. the gpu_check step)")


class JsonlReporter:
    def __init__(self, path: str, step: str):
        self.path, self.step = path, step
        self.durations: dict[str, float] = {}
        self.start = time.time()

    def _write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": self.step, **record}) + "\n")

    @staticmethod
    def _text(report) -> str | None:
        if not report.longrepr:
            return None
        if isinstance(report.longrepr, tuple):  # a skip: (file, line, reason)
            return str(report.longrepr[2])[:4000]
        return str(report.longreprtext)[-4000:]

    def pytest_runtest_logreport(self, report):
        self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + report.duration
        outcome = None
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome = report.outcome if report.when == "call" or report.skipped else "error"
        elif report.when == "teardown" and report.failed:
            outcome = "error"
        if outcome is not None:
            self._write({"nodeid": report.nodeid, "outcome": outcome, "when": report.when,
                         "duration": round(self.durations[report.nodeid], 4), "longrepr": self._text(report)})

    def pytest_collectreport(self, report):
        if report.failed:
            self._write({"nodeid": report.nodeid, "outcome": "error", "when": "collect", "duration": 0.0,
                         "longrepr": self._text(report)})

    def pytest_sessionfinish(self, session, exitstatus):
        self._write({"nodeid": None, "exitstatus": int(exitstatus), "tests": session.testscollected,
                     "failed": session.testsfailed, "seconds": round(time.time() - self.start, 2)})


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    path = config.getoption("--jsonl-out")
    if path and not hasattr(config, "workerinput"):
        open(path, "a").close()  # the file exists from the start, results or not
        config.pluginmanager.register(JsonlReporter(path, config.getoption("--jsonl-step")), "jsonl-reporter")
