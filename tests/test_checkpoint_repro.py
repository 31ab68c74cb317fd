"""Byte-reproducible checkpoints: two `sparsekit compress` runs of one recipe and seed write identical files.

Maps in a safetensors header (`__metadata__`) are written in a hash order that changes from process to
process (the Rust side seeds its hasher at random; PYTHONHASHSEED varies the Python side), so the runs
must be separate processes: one process saving twice could reuse the same order and hide the problem.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from sparsekit.checkpoint import MASKS_FILE, METADATA_FILE, load_masks
from sparsekit.pack.bitmask import pack_mask

# Pruned and packed (2:4 + int4 RTN): both masks.safetensors and packed buffers in model.safetensors.
# No calibration data: the test runs without $SPARSEKIT_DATA and takes seconds.
RECIPE = "- prune: {method: magnitude, pattern: '2:4'}\n- quantize: {format: int4, group_size: 32, method: rtn}"
# sparsekit.json keys that differ between runs by design: wall clock, step timings, the command line (--out)
VOLATILE = {"date", "seconds", "command"}


def _stable(value: Any) -> Any:
    """`value` (parsed JSON) without the VOLATILE keys, at any depth."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _compress(model_dir: Path, out: Path, hash_seed: str) -> subprocess.Popen:
    """`sparsekit compress MODEL_DIR --out OUT` in a fresh interpreter with its own PYTHONHASHSEED."""
    code = "import sys; from sparsekit.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = ["compress", str(model_dir), "--recipe", RECIPE, "--seed", "0", "--device", "cpu", "--out", str(out),
            "--quiet"]
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    return subprocess.Popen([sys.executable, "-c", code, *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_compress_runs_write_identical_tensor_files(tiny_dir, tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    procs = [_compress(tiny_dir, out, seed) for out, seed in zip(outs, ("1", "2"))]  # concurrently: ~half the time
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    files = sorted(p.name for p in outs[0].iterdir())
    assert files == sorted(p.name for p in outs[1].iterdir())
    tensors = [n for n in files if n.endswith(".safetensors")]
    assert {"model.safetensors", MASKS_FILE} <= set(tensors)
    # every file but the description (which holds the date) byte for byte: tensors, config, tokenizer
    differ = [n for n in files if n != METADATA_FILE and (outs[0] / n).read_bytes() != (outs[1] / n).read_bytes()]
    assert not differ, f"files differ between two identical runs: {differ}"
    meta = [json.loads((out / METADATA_FILE).read_text()) for out in outs]
    assert meta[0]["files"] == meta[1]["files"] and sorted(meta[0]["files"]) == tensors
    assert meta[0]["packed"]  # the packed path was exercised
    assert _stable(meta[0]) == _stable(meta[1])  # all of it but what names the run (time, --out)
    masks = load_masks(outs[0])  # the one-key metadata reads back: every projection, its shape, 2:4
    assert sorted(masks) == sorted(meta[0]["packed"]) and len(masks) == 3 * 7
    assert all(tuple(m.shape) == tuple(meta[0]["packed"][n]["shape"]) and m.float().mean() == 0.5
               for n, m in masks.items())


def test_masks_of_the_one_key_per_module_format_still_load(tmp_path):
    """Checkpoints written before the fix keep one `__metadata__` key per module (its shape, "a,b")."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    masks = {"model.layers.0.mlp.down_proj": torch.rand(64, 96, generator=gen) > 0.5,
             "model.layers.1.self_attn.q_proj": torch.rand(7, 13, generator=gen) > 0.5}
    save_file({n: pack_mask(m) for n, m in masks.items()}, tmp_path / MASKS_FILE,
              metadata={"format": "bitmask-lsb", **{n: ",".join(map(str, m.shape)) for n, m in masks.items()}})
    loaded = load_masks(tmp_path)
    assert loaded.keys() == masks.keys() and all(torch.equal(loaded[n], masks[n]) for n in masks)
