"""A CPU model's weights on 2 MiB pages (Linux transparent huge pages): opt-in, `SPARSEKIT_HUGE_PAGES=1`.

Why: a decode step streams every weight once, and on 4 KiB pages one core reads memory slower. The hardware
prefetchers stop at every 4 KiB page boundary and each new page costs a page walk: on one Zen 4 core of the
development VM a 2 GiB read ran 12-22% faster from 2 MiB pages (bench/kernels/cpu/huge_pages.py), and one long
stream, the slowest access pattern on 4 KiB pages, became the fastest (bench/kernels/cpu/page_streams.cpp).

Why opt-in: the decode kernels gained less than the read, per call at one thread -20% to +7% in three pairs
of runs (torch's fp32 dense -11% to -13%; `cpu_targets.py --pages 2m` against `--pages 4k`), and a whole decode
of Llama-3.2-1B's shapes moved by -3% to +14% (the pages section of docs/cpu-kernels.md has both measurements); memory
advised for huge pages keeps the advice after the allocator frees it, so later small allocations there can
fault in whole huge pages (and compact memory to find them). torch's own switch, `THP_MEM_ALLOC_ENABLE=1`
(set before torch's first allocation), does the same for every large tensor.

How: `madvise(MADV_HUGEPAGE)` on the 2 MiB-aligned interior of each tensor's storage, then
`madvise(MADV_COLLAPSE)` (Linux >= 6.1), which moves the pages already written into huge pages now, in
place (same addresses, same bytes; ~4.5 GB/s on the VM). The unaligned ends of a storage, and any tensor
under 2 MiB, stay on 4 KiB pages. Where the kernel cannot (no THP, "never" in sysfs, an older kernel, no
free huge page) the weights stay where they are and `HugePages.reason` says why: nothing is lost but speed.

SPARSEKIT_HUGE_PAGES | what happens
---------------------|------------------------------------------------------------------------------------
unset (the default)  | nothing automatic; an explicit `to_huge_pages` / `place_on_huge_pages` call moves memory
`1`                  | also `load_model`, `sparsekit.load` and `convert` place what they build (`place_if_asked`),
                     | and the C++ extension puts its own weight copies (int4 + 2:4 a8 tiles) on huge pages
`0`                  | nothing moves, not even on an explicit call
anything else        | as unset, with a warning

Under THP mode "always" (/sys/kernel/mm/transparent_hugepage/enabled) the kernel may back large buffers with
huge pages unasked; the development VM runs "madvise", where only advised memory gets them.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import itertools
import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

HUGE_PAGE = 2 << 20  # the PMD size of x86-64 and of arm64 with 4 KiB base pages: what this module assumes
_MADV_HUGEPAGE = 14  # <asm-generic/mman-common.h>
_MADV_COLLAPSE = 25  # Linux 6.1
_THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_PMD_SIZE = Path("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size")

log = logging.getLogger(__name__)


@dataclass
class HugePages:
    """What `to_huge_pages` did: bytes now on 2 MiB pages out of the bytes it was given, and why not more."""

    huge_bytes: int = 0
    total_bytes: int = 0
    reason: str | None = None  # None: every 2 MiB-aligned interior was collapsed


@functools.cache
def _madvise() -> Callable[[int, int, int], int] | None:
    """libc's madvise(addr, len, advice) -> int, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the symbols this process has loaded: libc among them
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def setting() -> str | None:
    """SPARSEKIT_HUGE_PAGES as this module reads it: '1', '0' or None (unset; any other value, with a warning)."""
    value = os.environ.get("SPARSEKIT_HUGE_PAGES")
    if value in (None, "0", "1"):
        return value
    _warn_once(f"SPARSEKIT_HUGE_PAGES={value!r} is neither 1 nor 0: read as unset (no automatic placement)")
    return None


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


def thp_mode() -> str | None:
    """The kernel's THP mode ('always', 'madvise', 'never'), or None where it has none."""
    try:
        text = _THP_ENABLED.read_text()
    except OSError:
        return None
    return text[text.index("[") + 1:text.index("]")] if "[" in text else text.strip()


def unavailable() -> str | None:
    """Why this process cannot put memory on transparent huge pages, or None when it can try."""
    if _madvise() is None:
        return f"no madvise on {sys.platform}: weights stay on the system's base pages"
    if setting() == "0":
        return "SPARSEKIT_HUGE_PAGES=0: nothing is moved onto huge pages"
    mode = thp_mode()
    if mode is None:
        return f"{_THP_ENABLED} is not readable: this kernel has no transparent huge pages"
    if mode == "never":
        return f"transparent huge pages are off ({_THP_ENABLED}: never)"
    try:
        pmd = int(_PMD_SIZE.read_text())
    except (OSError, ValueError):
        pmd = HUGE_PAGE  # older kernels do not say; x86-64 and arm64 with 4 KiB pages use 2 MiB
    if pmd != HUGE_PAGE:
        return f"huge pages here are {pmd} bytes, not the 2 MiB this module assumes"
    return None


def _kernel_before_6_1() -> bool:
    """Whether the running Linux predates MADV_COLLAPSE (6.1)."""
    try:
        major, minor = (int(v) for v in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) < (6, 1)


def _interior(ptr: int, nbytes: int) -> tuple[int, int]:
    """The 2 MiB-aligned [start, end) inside [ptr, ptr + nbytes) (start >= end when there is none)."""
    return -(-ptr // HUGE_PAGE) * HUGE_PAGE, (ptr + nbytes) // HUGE_PAGE * HUGE_PAGE


def to_huge_pages(tensors: Iterable[torch.Tensor]) -> HugePages:
    """Move the storage of each CPU tensor onto 2 MiB pages where a whole one fits inside it (module
    docstring); each storage once, other devices skipped. Never raises for lack of huge pages: the result
    says how many bytes moved and why the others did not."""
    out = HugePages()
    seen: set[int] = set()
    storages: list[torch.UntypedStorage] = []
    for t in tensors:
        if t.device.type != "cpu" or t.layout != torch.strided:
            continue
        try:
            s = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # a tensor subclass without plain storage
            continue
        if s.data_ptr() in seen or s.nbytes() == 0:
            continue
        seen.add(s.data_ptr())
        storages.append(s)
        out.total_bytes += s.nbytes()
    why = unavailable()
    if why:
        out.reason = why
        return out
    madvise = _madvise()
    for s in storages:
        start, end = _interior(s.data_ptr(), s.nbytes())
        if end <= start:
            out.reason = out.reason or "tensors under 2 MiB (or their unaligned ends) stay on 4 KiB pages"
            continue
        if madvise(start, end - start, _MADV_HUGEPAGE) != 0:
            out.reason = out.reason or f"madvise(MADV_HUGEPAGE): {os.strerror(ctypes.get_errno())}"
            continue
        if madvise(start, end - start, _MADV_COLLAPSE) != 0:
            err = ctypes.get_errno()
            out.reason = out.reason or (
                "MADV_COLLAPSE needs Linux >= 6.1: the pages move only when khugepaged gets to them"
                if err == errno.EINVAL and _kernel_before_6_1() else
                f"madvise(MADV_COLLAPSE): {os.strerror(err)} (no free huge page, or a mapping that cannot take one)")
            continue
        out.huge_bytes += end - start
    return out


def asked() -> bool:
    """Whether this process asked for its models' weights on huge pages (SPARSEKIT_HUGE_PAGES=1)."""
    return setting() == "1"


def place_on_huge_pages(model: torch.nn.Module) -> HugePages:
    """`to_huge_pages` on every parameter and buffer of `model` (the packed weights, and the dense ones the
    decode streams beside them: embeddings, the LM head)."""
    result = to_huge_pages(itertools.chain(model.parameters(), model.buffers()))
    log.debug("huge pages: %.1f of %.1f MiB%s", result.huge_bytes / 2 ** 20, result.total_bytes / 2 ** 20,
              f" ({result.reason})" if result.reason else "")
    if result.huge_bytes == 0 and result.total_bytes >= HUGE_PAGE:
        _warn_once(f"huge pages asked for, none given: {result.reason}")
    return result


def place_if_asked(model: torch.nn.Module) -> HugePages | None:
    """`place_on_huge_pages(model)` when the process `asked()`, else None. Where sparsekit loads or converts a
    model on the CPU (the dense baseline too, so that both sides of a comparison read from the same pages)."""
    return place_on_huge_pages(model) if asked() else None
