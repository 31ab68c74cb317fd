"""sparsekit.utils.pages: weights onto 2 MiB pages, in place, bytes unchanged; a clear reason where not.

Whether memory is on huge pages is read from /proc/self/smaps in a fresh interpreter: in this process, memory
that an earlier test advised and freed keeps its advice and its huge pages when the allocator hands it out
again, so a tensor could look placed without anything placing it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sparsekit.utils import pages
from sparsekit.utils.pages import HUGE_PAGE, place_if_asked, to_huge_pages, unavailable

REPO = Path(__file__).resolve().parents[1]

#: the bytes of a storage's 2 MiB-aligned interior that lie in mappings advised MADV_HUGEPAGE ("hg") and backed
#: by huge pages (AnonHugePages), clipped to the interior: a mapping can merge with an advised neighbour's
HUGE_BYTES = '''
def huge_bytes(t):
    from sparsekit.utils.pages import _interior
    s = t.untyped_storage()
    lo, hi = _interior(s.data_ptr(), s.nbytes())
    total, vma, anon = 0, None, 0
    for line in open("/proc/self/smaps").read().splitlines():
        f = line.split()
        if f and "-" in f[0] and not f[0].endswith(":"):
            vma = tuple(int(v, 16) for v in f[0].split("-"))
        elif f[:1] == ["AnonHugePages:"]:
            anon = int(f[1]) * 1024
        elif f[:1] == ["VmFlags:"] and "hg" in f[1:] and vma[0] < hi and vma[1] > lo:
            total += min(anon, min(vma[1], hi) - max(vma[0], lo))
    return total
'''


def _fresh(body: str, **env: str) -> dict:
    """Run `body` (which sets `out`, a dict) in a new interpreter from this checkout, with `env` on top of this
    process's environment less SPARSEKIT_HUGE_PAGES; return `out`."""
    code = "import json, torch\n" + HUGE_BYTES + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    base = {k: v for k, v in os.environ.items() if k != "SPARSEKIT_HUGE_PAGES"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**base, "PYTHONPATH": str(REPO), **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _needs_thp():
    """Skip where nothing can move: no THP, or a kernel without MADV_COLLAPSE (probed in a fresh interpreter, so
    that this one keeps no advised memory)."""
    why = unavailable()
    if why:
        pytest.skip(why)
    if pages._kernel_before_6_1():
        pytest.skip(f"Linux {__import__('os').uname().release}: no MADV_COLLAPSE (6.1)")


def test_interior_is_the_aligned_part():
    assert pages._interior(HUGE_PAGE, 3 * HUGE_PAGE) == (HUGE_PAGE, 4 * HUGE_PAGE)
    assert pages._interior(HUGE_PAGE + 64, 3 * HUGE_PAGE) == (2 * HUGE_PAGE, 4 * HUGE_PAGE)
    start, end = pages._interior(HUGE_PAGE + 64, HUGE_PAGE)  # no whole huge page inside
    assert end <= start


def test_collapse_keeps_address_and_bytes():
    _needs_thp()
    out = _fresh("""
        from sparsekit.utils.pages import _interior, to_huge_pages
        t = torch.randn(3 * (2 << 20) // 4 + 17)  # > 2 huge pages, ends unaligned
        before, ptr = t.clone(), t.data_ptr()
        placed = huge_bytes(t)
        r = to_huge_pages([t, t[5:]])  # a view of the same storage counts once
        start, end = _interior(ptr, t.untyped_storage().nbytes())
        out = {"before": placed, "after": huge_bytes(t), "huge": r.huge_bytes, "total": r.total_bytes,
               "interior": end - start, "nbytes": t.untyped_storage().nbytes(), "same": t.data_ptr() == ptr,
               "equal": bool(torch.equal(t, before)), "reason": r.reason}
    """)
    assert out["before"] == 0
    assert out["total"] == out["nbytes"] and out["huge"] == out["interior"] >= 2 * HUGE_PAGE, out["reason"]
    assert out["after"] == out["interior"]
    assert out["same"] and out["equal"]


def test_small_and_foreign_tensors_are_left_with_a_reason():
    result = to_huge_pages([torch.ones(100)])
    assert result.huge_bytes == 0 and result.total_bytes == 400 and result.reason
    meta = torch.empty(1 << 22, device="meta")
    assert to_huge_pages([meta]).total_bytes == 0


def test_opt_out_by_environment(monkeypatch, caplog):
    monkeypatch.setenv("SPARSEKIT_HUGE_PAGES", "yes")  # neither 1 nor 0: unset, and said so
    assert pages.setting() is None and not pages.asked()
    assert "neither 1 nor 0" in caplog.text
    monkeypatch.setenv("SPARSEKIT_HUGE_PAGES", "0")
    assert "SPARSEKIT_HUGE_PAGES=0" in unavailable()
    result = to_huge_pages([torch.randn(HUGE_PAGE)])  # 8 MiB
    assert result.huge_bytes == 0 and "SPARSEKIT_HUGE_PAGES=0" in result.reason


def test_no_thp_says_why(monkeypatch, tmp_path):
    never = tmp_path / "enabled"
    never.write_text("always madvise [never]\n")
    monkeypatch.setattr(pages, "_THP_ENABLED", never)
    assert "never" in unavailable()
    monkeypatch.setattr(pages, "_THP_ENABLED", tmp_path / "missing")
    assert "not readable" in unavailable()


def test_place_on_huge_pages_covers_parameters_and_buffers():
    _needs_thp()
    out = _fresh("""
        from sparsekit.utils.pages import place_on_huge_pages
        model = torch.nn.Linear(2048, 1024)  # 8 MiB of weight
        model.register_buffer("codes", torch.full((4 << 20,), 7, dtype=torch.uint8))  # 4 MiB, written
        r = place_on_huge_pages(model)
        out = {"total": r.total_bytes, "sizes": [t.untyped_storage().nbytes() for t in (model.weight, model.bias,
               model.codes)], "weight": huge_bytes(model.weight), "codes": huge_bytes(model.codes)}
    """)
    assert out["total"] == sum(out["sizes"])
    assert out["weight"] >= 3 * HUGE_PAGE and out["codes"] >= HUGE_PAGE


@pytest.mark.parametrize("asked", ["1", None])
def test_converted_cpu_weights_go_on_huge_pages_when_asked(asked):
    """pack_modules (what `sparsekit.convert` runs) places a new packed weight with SPARSEKIT_HUGE_PAGES=1, and
    leaves it on 4 KiB pages without it."""
    _needs_thp()
    out = _fresh("""
        from sparsekit.quant import get_format
        from sparsekit.steps.convert import pack_modules
        model = torch.nn.Sequential(torch.nn.Linear(4096, 1024, bias=False))
        q = get_format("int8").quantize(model[0].weight.detach())
        report = pack_modules(model, {}, {"0": q})
        out = {"report": report, "converted": huge_bytes(model[0].codes)}
    """, **({"SPARSEKIT_HUGE_PAGES": asked} if asked else {}))
    assert out["report"] == {"0": "int8"}
    if asked:
        assert out["converted"] >= HUGE_PAGE  # 4 MiB of int8 codes
    elif pages.thp_mode() == "madvise":  # under "always" the kernel may give huge pages unasked
        assert out["converted"] == 0


def test_place_if_asked_follows_the_environment(monkeypatch):
    model = torch.nn.Linear(8, 8)
    monkeypatch.delenv("SPARSEKIT_HUGE_PAGES", raising=False)
    assert place_if_asked(model) is None
    monkeypatch.setenv("SPARSEKIT_HUGE_PAGES", "1")
    assert place_if_asked(model).total_bytes == (64 + 8) * 4


@pytest.mark.parametrize("asked", ["1", None])
def test_the_extensions_a8_tiles_go_on_huge_pages_when_asked(asked):
    """The int4 + 2:4 a8 kernel's own weight copy (built by the C++ extension at the first call: 16 rows interleaved
    for VNNI, 8 for AVX2, the same size) is advised and collapsed with SPARSEKIT_HUGE_PAGES=1: the process's huge
    pages grow by about its size; without, not."""
    _needs_thp()
    from sparsekit import _ext

    if not (_ext.cpu_available() and _ext.cpu_info().get("a8") in ("vnni", "avx2")):
        pytest.skip("needs sparsekit._cpu's a8 kernels (VNNI or AVX2)")
    out = _fresh("""
        from sparsekit import _ext
        from sparsekit.ops.backends.cpu import cpu_a8_linear
        from sparsekit.pack import Int4Semi24
        from sparsekit.prune.patterns import nm_mask
        from sparsekit.quant import get_format

        def anon_huge():
            text = open("/proc/self/smaps_rollup").read()
            return int(text.split("AnonHugePages:")[1].split()[0]) * 1024

        w = torch.randn(4096, 4096) * 0.02
        mask = nm_mask(torch.rand(4096, 4096), 2, 4)
        layout = Int4Semi24.pack(get_format("int4", 128, True).quantize(w.masked_fill(~mask, 0), mask), mask)
        before = anon_huge()
        cpu_a8_linear(torch.randn(1, 4096), layout)
        out = {"grew": anon_huge() - before, "tiles": _ext.load_cpu().a8_tiles_bytes()}
    """, **({"SPARSEKIT_HUGE_PAGES": asked} if asked else {}))
    assert out["tiles"] >= 3 * HUGE_PAGE  # 6.25 MiB
    if asked:
        assert out["grew"] >= out["tiles"] - 2 * HUGE_PAGE  # all but the unaligned ends
    elif pages.thp_mode() == "madvise":
        assert out["grew"] < HUGE_PAGE
