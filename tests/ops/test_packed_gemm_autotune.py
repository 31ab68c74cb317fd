"""The Triton packed GEMM's autotune key tells the kernel kinds apart (on a CPU, no launch).

The autotuner caches one config per key (`triton.autotune(key=...)` values + the dtypes of the tensor
arguments). int4 and int4 + 2:4 weights of the same shape stream uint8 codes with fp16 scales, so with
a key of shape and M bucket alone the second kind would reuse the first one's tuned tiles. The key is
rebuilt here from the arguments `packed_gemm` really passes (captured from the untuned launch) exactly
as `triton.runtime.autotuner.Autotuner.run` builds it.
"""

import pytest
import torch

pytest.importorskip("triton")

from sparsekit.kernels import packed_gemm as pg  # noqa: E402
from sparsekit.ops.backends.triton import operands  # noqa: E402
from sparsekit.pack import MXFP4, Int4, Int4Semi24, Semi24  # noqa: E402
from sparsekit.prune.patterns import nm_mask  # noqa: E402
from sparsekit.quant import IntFormat, get_format  # noqa: E402

N, K = 64, 256
SHAPE_KEY = ["M_BUCKET", "N", "K", "SPLIT_K"]  # what the key held before the kind flags were added


class _Launch:
    """Stands in for `_packed_gemm_kernel[grid]`: records the launch instead of running it."""

    def __init__(self):
        self.calls = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((args, kwargs))


def _layouts():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N, K, generator=g)
    mask = nm_mask(torch.rand(N, K, generator=g), 2, 4)
    w24 = w.masked_fill(~mask, 0)
    int4 = IntFormat(4, 128)
    return {"semi24": Semi24.pack(w24.half(), mask), "int4": Int4.pack(int4.quantize(w)),
            "int4_asym": Int4.pack(IntFormat(4, 128, False).quantize(w)),
            "int4_semi24": Int4Semi24.pack(int4.quantize(w24, mask), mask),
            "mxfp4": MXFP4.pack(get_format("mxfp4").quantize(w))}


def _autotune_key(args, kwargs, keys):
    """The cache key `Autotuner.run` computes for these launch arguments (BLOCK_* are the tuned ones)."""
    tuner = pg._packed_gemm_autotuned
    named = {**dict(zip(tuner.arg_names, args)), **kwargs}
    named = {k: v for k, v in named.items() if k in tuner.arg_names and not k.startswith("BLOCK_")}
    key = [named[k] for k in keys if k in named]
    key += [str(v.dtype) for v in named.values() if hasattr(v, "dtype")]
    return tuple(key)


@pytest.fixture(scope="module")
def launches():
    """kind -> the (args, kwargs) packed_gemm launches for a decode-sized input of the same shape."""
    out = {}
    mp = pytest.MonkeyPatch()
    try:
        for kind, layout in _layouts().items():
            rec = _Launch()
            mp.setattr(pg, "_packed_gemm_kernel", rec)
            pg.packed_gemm(torch.randn(1, K, dtype=torch.float16), n=N, k=K, split_k=1, **operands(layout))
            assert len(rec.calls) == 1
            out[kind] = rec.calls[0]
    finally:
        mp.undo()
    return out


def test_key_names_the_kind_flags():
    keys = pg._packed_gemm_autotuned.keys
    assert {"SPARSE", "WEIGHT", "HAS_ZERO"} <= set(keys)
    assert set(SHAPE_KEY) <= set(keys)
    assert set(keys) <= set(pg._packed_gemm_autotuned.arg_names)  # a misspelt name would be ignored silently


def test_every_kind_gets_its_own_tuned_config(launches):
    keys = pg._packed_gemm_autotuned.keys
    tuned = {kind: _autotune_key(*call, keys) for kind, call in launches.items()}
    assert len(set(tuned.values())) == len(tuned), tuned
    # the case the kind flags exist for: without them int4 and int4 + 2:4 of one shape share a key
    shape_only = {kind: _autotune_key(*call, SHAPE_KEY) for kind, call in launches.items()}
    assert shape_only["int4"] == shape_only["int4_semi24"]
    assert tuned["int4"] != tuned["int4_semi24"]
