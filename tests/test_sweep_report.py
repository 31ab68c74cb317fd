"""The sweep report as a person sees it: rendered by a real browser (Debian's chromium, headless), every
embedded plot decodes, the table is there, and the page is not blank. Skips where chromium is absent
(scripts/setup.sh installs it on Debian as root)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from sparsekit import sweep
from tests.test_sweep import LABELLED, _stand_in, _write

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--virtual-time-budget=5000"]


def _report(tmp_path, monkeypatch):
    def with_speed(grid, recipe, progress=True):
        row = _stand_in(grid, recipe)
        row.update(sparsity=0.5 if recipe and "prune" in recipe[0] else 0.0, tokens_per_s=20.0 + len(recipe),
                   device="cpu (x86_64, 2 threads)")
        return row

    monkeypatch.setattr(sweep, "run_point", with_speed)
    return sweep.run_sweep(_write(tmp_path, LABELLED), tmp_path / "out", progress=False)


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=120)


def test_every_plot_decodes_in_a_browser_and_the_table_shows(tmp_path, monkeypatch):
    page = _report(tmp_path, monkeypatch)
    dom = _chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-images-ok="2/2"' in dom.stdout  # the Pareto plot and the speed plot
    assert '<p style="color:red">' not in dom.stdout  # the warning the page inserts (not its script's text)
    assert dom.stdout.count("<tr>") == 10  # header + 9 points


def test_a_broken_plot_is_flagged_on_the_page(tmp_path, monkeypatch):
    page = _report(tmp_path, monkeypatch)
    text = page.read_text()
    start = text.index("base64,") + len("base64,")
    page.write_text(text[:start] + "AAAA" + text[start + 40:])  # corrupt the first image's data
    dom = _chromium("--dump-dom", page.as_uri())
    assert 'data-images-ok="1/2"' in dom.stdout and "1 plot(s) failed to render" in dom.stdout


def test_the_rendered_page_is_not_blank(tmp_path, monkeypatch):
    from PIL import Image

    page = _report(tmp_path, monkeypatch)
    shot = tmp_path / "shot.png"
    proc = _chromium(f"--screenshot={shot}", "--window-size=1400,1000", page.as_uri())
    assert shot.exists(), proc.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    colours = len(image.resize((350, 250)).getcolors(maxcolors=350 * 250))
    assert colours > 50  # plots and text, not an empty white page
