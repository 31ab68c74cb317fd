"""`compress` -> checkpoint folder -> `eval DIR`: the round trip, the metadata, and the failure contract."""

import json

import pytest
import torch

from sparsekit.api import compress, evaluate, save
from sparsekit.checkpoint import METADATA_FILE, load_masks, read_metadata
from sparsekit.cli import main
from sparsekit.errors import SparsekitError
from sparsekit.models.loader import load_model
from sparsekit.pack.bitmask import pack_mask, unpack_mask


@pytest.mark.parametrize("shape", [(1,), (7, 13), (64, 64), (3, 5, 9)])
def test_bitmask_round_trip(shape):
    mask = torch.rand(shape) > 0.4
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8
    assert torch.equal(unpack_mask(packed, shape), mask)


def test_compress_save_load_eval(tiny_dir, data_dir, tmp_path):
    out = tmp_path / "ckpt"
    compressed = compress(str(tiny_dir), "wanda-2:4", nsamples=4, seqlen=64, data_dir=data_dir, progress=False)
    assert compressed.sparsity == 0.5
    save(compressed, out, command="test")
    meta = read_metadata(out)
    assert meta["recipe"][0]["prune"]["pattern"] == "2:4" and meta["command"] == "test"
    assert meta["calibration"] == {"source": "c4", "nsamples": 4, "seqlen": 64, "seed": 0, "batch_size": 8,
                                   "forward_dtype": "float32"}
    modules = meta["steps"][0]["modules"]
    assert len(modules) == 3 * 7 and all(m["sparsity"] == 0.5 for m in modules.values())
    masks = load_masks(out)
    model, _ = load_model(out)
    for name, mask in compressed.masks.items():
        assert torch.equal(masks[name], mask)
        weight = model.get_submodule(name).weight
        assert torch.equal(weight, compressed.model.get_submodule(name).weight)
        assert bool((weight[~mask] == 0).all())
    report = evaluate(str(out), seqlen=32, limit=2, data_dir=data_dir, progress=False)
    assert report["recipe"] == meta["recipe"] and report["sparsity"] == 0.5


def test_a_recipe_continues_from_a_checkpoint_with_its_masks(tiny_dir, data_dir, tmp_path):
    """GPTQ on a saved 2:4 checkpoint keeps its zeros (its error feedback would fill them without the
    checkpoint's masks), and the new checkpoint carries the masks on."""
    from sparsekit.prune.patterns import is_nm

    opts = dict(nsamples=4, seqlen=32, data_dir=data_dir, progress=False)
    base = save(compress(str(tiny_dir), "wanda-2:4", **opts), tmp_path / "base")
    quant = compress(str(base), [{"quantize": {"format": "int4", "group_size": 32, "method": "gptq"}}], **opts)
    masks = load_masks(base)
    assert set(quant.masks) == set(masks) and quant.sparsity == 0.5
    for name, mask in masks.items():
        w = quant.model.get_submodule(name).weight
        assert bool((w[~mask] == 0).all()) and is_nm(mask, 2, 4) and name in quant.qtensors
    carried = load_masks(save(quant, tmp_path / "q"))
    assert all(torch.equal(carried[n], m) for n, m in masks.items())
    with pytest.raises(SparsekitError, match="run structured steps on the dense model first"):
        compress(str(base), [{"prune_channels": {"ratio": 0.25}}], **opts)


def test_out_dir_must_be_new_or_empty_and_failures_leave_nothing(tiny_dir, data_dir, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    compressed = compress(str(tiny_dir), "magnitude-50", progress=False)
    with pytest.raises(SparsekitError, match="already exists and is not an empty folder"):
        save(compressed, taken)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]

    class Broken:
        def save_pretrained(self, path):
            raise OSError("disk full")

    compressed.tokenizer = Broken()
    with pytest.raises(OSError, match="disk full"):
        save(compressed, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no half-written folder, no temp folder


def test_cli_compress_then_eval(tiny_dir, data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SPARSEKIT_DATA", str(data_dir))
    out = tmp_path / "c"
    assert main(["compress", str(tiny_dir), "--recipe", "sparsegpt-50", "--out", str(out), "--nsamples", "4",
                 "--seqlen", "64", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "sparsity  0.5000" in printed and str(out) in printed
    assert json.loads((out / METADATA_FILE).read_text())["command"].startswith("sparsekit compress ")
    report_file = tmp_path / "r.json"
    assert main(["eval", str(out), "--seqlen", "32", "--limit", "2", "--json", str(report_file), "--quiet"]) == 0
    report = json.loads(report_file.read_text())
    assert report["recipe"][0]["prune"]["method"] == "sparsegpt" and report["sparsity"] >= 0.5


@pytest.mark.parametrize("extra, expected", [
    (["--recipe", "wanda-51"], "neither a YAML file nor a built-in recipe"),
    (["--recipe", "RECIPE_FILE"], "sparsity must be in [0, 1)"),
    (["--recipe", "wanda-50", "--calib", "ptb"], "invalid choice: 'ptb'"),
    (["--recipe", "wanda-50", "--data-dir", "EMPTY"], "C4 not found"),
    (["--recipe", "- prune: {method: wanda, pattern: '3:7'}"], "in_features=64 is not a multiple of M=7"),
    (["--recipe", "- prune: {method: wanda}\n- quantize: {format: int5}"],
     "integer formats are int8, int4, int3 and int2"),
    (["--recipe", "wanda-50", "--out", "TAKEN"], "already exists"),
    (["--recipe", "wanda-50", "--out", ""], "--out DIR is required"),
])
def test_cli_compress_bad_input(extra, expected, tiny_dir, data_dir, tmp_path, capsys, monkeypatch):
    if "EMPTY" in extra:  # --data-dir is searched before $SPARSEKIT_DATA
        monkeypatch.delenv("SPARSEKIT_DATA", raising=False)
    else:
        monkeypatch.setenv("SPARSEKIT_DATA", str(data_dir))
    recipe_file = tmp_path / "bad.yaml"
    recipe_file.write_text("- prune: {method: wanda, sparsity: 1.5}\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    subst = {"RECIPE_FILE": str(recipe_file), "EMPTY": str(tmp_path / "empty"), "TAKEN": str(tmp_path / "taken")}
    extra = [subst.get(a, a) for a in extra]
    argv = ["compress", str(tiny_dir), "--nsamples", "2", "--seqlen", "32", "--quiet"]
    if "--out" not in extra:
        argv += ["--out", str(tmp_path / "out")]
    try:
        rc = main(argv + extra)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "out").exists()


def test_cli_lists_builtin_recipes(capsys):
    assert main(["compress", "smollm2-135m", "--recipe", "list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"wanda-2:4", "sparsegpt-50", "magnitude-4:8", "sparsegpt-60-search"} <= set(names)


def test_prune_and_quantize_checkpoint_reports_true_bytes(tiny_dir, data_dir, tmp_path):
    """2:4 + int4 (g32) joint: the checkpoint records formats and packed bits; eval's bytes use them."""
    from sparsekit.eval.size import packed_bits_per_weight, weight_bytes

    recipe = [{"prune": {"method": "sparsegpt", "pattern": "2:4"}},
              {"quantize": {"format": "int4", "group_size": 32, "method": "gptq", "joint": True}}]
    compressed = compress(str(tiny_dir), recipe, nsamples=4, seqlen=64, data_dir=data_dir, progress=False)
    out = tmp_path / "ckpt"
    save(compressed, out)
    meta = read_metadata(out)
    assert [s["step"] for s in meta["steps"]] == ["prune", "quantize"] and meta["steps"][1]["joint_with_previous"]
    bits = meta["storage_bits_per_weight"]
    assert len(bits) == 21
    # 2:4 of int4 codes + 2-bit positions + one fp16 scale per 32 inputs: 0.5 * (4 + 2) + 16 / 32
    assert all(b == pytest.approx(3.5) for b in bits.values())
    assert packed_bits_per_weight((64, 64), element_bits=4, overhead_bits=16 / 32, pattern="2:4") == 3.5
    report = evaluate(str(out), seqlen=32, limit=1, data_dir=data_dir, progress=False)
    assert report["sparsity"] == 0.5  # the masks', not the zeros int4 rounding adds
    model = compressed.model
    proj = sum(model.get_submodule(n).weight.numel() for n in bits)
    assert report["bytes"] == pytest.approx(weight_bytes(model) - proj * 4 + proj * 3.5 / 8, abs=1)


def test_cli_compress_quantized(tiny_dir, data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SPARSEKIT_DATA", str(data_dir))
    out = tmp_path / "q"
    recipe = "- prune: {method: wanda, pattern: '2:4'}\n- quantize: {format: int4, group_size: 32, method: gptq}"
    assert main(["compress", str(tiny_dir), "--recipe", recipe, "--out", str(out), "--nsamples", "4",
                 "--seqlen", "64", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "quantize: int4 (gptq, 4.500 bits) over 21 modules" in printed
    assert "packed    3.500 bits per projection weight" in printed
    assert main(["eval", str(out), "--seqlen", "32", "--limit", "1", "--quiet"]) == 0
