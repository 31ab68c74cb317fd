"""Shared fixtures and marker handling.

Markers: `slow` runs everywhere (CI included); `gpu` needs a CUDA device; `cuda_ext` needs the
compiled sparsekit._C; `triton` needs Triton and either a GPU or TRITON_INTERPRET=1.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path | None:
    for cand in (os.environ.get("SPARSEKIT_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "wikitext-2-raw" / "wiki.test.raw").is_file():
            return Path(cand)
    return None


def pytest_collection_modifyitems(config, items):
    has_gpu = torch.cuda.is_available()
    has_triton = importlib.util.find_spec("triton") is not None
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    try:
        from sparsekit import _ext
        has_ext = _ext.available()
    except Exception:  # noqa: BLE001 - any failure to load means "no extension"
        has_ext = False
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if "cuda_ext" in item.keywords and not has_ext:
            item.add_marker(pytest.mark.skip(reason="sparsekit._C not built (no CUDA at install time)"))
        if "triton" in item.keywords and not (has_triton and (has_gpu or interpret)):
            item.add_marker(pytest.mark.skip(reason="needs triton and a GPU or TRITON_INTERPRET=1"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if d is None:
        pytest.skip("evaluation data not found: set SPARSEKIT_DATA (CI points it at ../shared/data)")
    return d


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A local tiny Llama folder with its tokenizer (for CLI and loader tests)."""
    from tests.tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def smollm2():
    """The real default model (fp32), loaded once per session."""
    from sparsekit.models import load_model

    return load_model("smollm2-135m")
