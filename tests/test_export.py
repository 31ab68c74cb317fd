"""`sparsekit export`: compressed-tensors and GGUF files that their own readers give back sparsekit's weights.

compressed-tensors: the library's decompression (through transformers' loader, as vLLM users load) gives
back sparsekit's dequantized weights exactly (float32 export) or their fp16 rounding (float16 export).
GGUF: the `gguf` package reads the file back; Q8_0 / Q4_0 are exact where the grids match, Q4_1 within
the fp16 rounding of its offset. Refusals exit 2 with one line and leave nothing behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import sparsekit
from sparsekit.cli import main
from sparsekit.errors import SparsekitError
from sparsekit.export import export, load_source
from tests.tiny import tiny_model, tiny_tokenizer

pytest.importorskip("compressed_tensors")

MAG24 = {"prune": {"method": "magnitude", "pattern": "2:4"}}


def _checkpoint(tmp_path: Path, recipe: list[dict], arch: str = "llama", name: str = "ck", **calib) -> Path:
    """A recipe on a tiny model, converted and saved (seconds; data-free unless `calib` options are given)."""
    tok = tiny_tokenizer()
    model = tiny_model(arch, vocab_size=len(tok))
    result = sparsekit.convert(model, recipe, tok, progress=False, **calib)
    return Path(sparsekit.save(result, tmp_path / name))


def _sparsekit_weights(path: Path) -> dict[str, torch.Tensor]:
    return {n: p.values for n, p in load_source(path).projections.items()}


def _library_decompress(out: Path) -> dict[str, torch.Tensor]:
    from sparsekit.export.compressed_tensors import read_back

    return read_back(out)


def _decompressed(out: Path) -> torch.nn.Module:
    """The export loaded by transformers (its compressed-tensors quantizer), decompressed by a first forward."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))  # compressed-tensors decompresses on the first forward
    return model


@pytest.mark.parametrize("quant, scheme", [
    ({"format": "int4", "group_size": 32}, {"num_bits": 4, "group_size": 32, "symmetric": True, "strategy": "group"}),
    ({"format": "int4", "group_size": 32, "symmetric": False},
     {"num_bits": 4, "group_size": 32, "symmetric": False, "strategy": "group"}),
    ({"format": "int8"}, {"num_bits": 8, "group_size": None, "symmetric": True, "strategy": "channel"}),
])
def test_compressed_tensors_decompresses_to_sparsekits_weights(tmp_path, quant, scheme):
    ck = _checkpoint(tmp_path, [{"quantize": quant}])
    want = _sparsekit_weights(ck)
    out = tmp_path / "ct"
    summary = export(ck, "compressed-tensors", out, dtype="float32")
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "pack-quantized"
    (group,) = config["config_groups"].values()
    assert group["targets"] == ["Linear"] and config["ignore"] == ["lm_head"]
    assert {k: group["weights"][k] for k in scheme} == scheme
    assert summary["schemes"][0]["modules"] == len(want) == 21
    assert summary["exact_quantized"] == 21 and summary["max_abs_error"] == 0
    got = _library_decompress(out)
    assert got.keys() == want.keys()
    for name, values in want.items():
        assert torch.equal(got[name], values), name
    assert json.loads((out / "sparsekit_export.json").read_text())["format"] == "compressed-tensors"


def test_float16_export_holds_the_fp16_rounding_and_pruned_zeros(tmp_path):
    ck = _checkpoint(tmp_path, [MAG24, {"quantize": {"format": "int4", "group_size": 32}}])
    want = _sparsekit_weights(ck)
    out = tmp_path / "ct"
    summary = export(ck, "compressed-tensors", out)
    assert summary["patterns"] == ["2:4"] and all(s == pytest.approx(0.5) for s in summary["sparsity"].values())
    model = _decompressed(out)
    assert model.dtype == torch.float16
    for name, values in want.items():
        got = model.get_submodule(name).weight
        assert torch.equal(got, values.to(torch.float16)), name
        assert bool((got[values == 0] == 0).all())  # every pruned weight is an exact zero


def test_a_short_last_group_is_written_at_the_common_divisor(tmp_path):
    # in_features 64 (q/k/v/gate/up: one group, i.e. per channel) and 96 (down: a short last group of 32) at g64
    ck = _checkpoint(tmp_path, [{"quantize": {"format": "int4", "group_size": 64}}])
    want = _sparsekit_weights(ck)
    out = tmp_path / "ct"
    summary = export(ck, "compressed-tensors", out, dtype="float32")
    assert summary["regrouped"] == ["group 64 written as group 32 (scales repeated; values exact)"]
    groups = json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"]
    by_size = {g["weights"]["group_size"]: g["targets"] for g in groups.values()}
    assert by_size[32] == ["re:.*mlp\\.down_proj$"] and len(by_size[None]) == 6  # None: strategy channel
    assert "re:.*self_attn\\.q_proj$" in by_size[None]
    got = _library_decompress(out)
    for name, values in want.items():
        assert torch.equal(got[name], values), name


def test_projections_left_dense_are_ignored_by_every_scheme(tmp_path):
    # two schemes (g64 -> per channel on K=64, g32 on K=96), and block 1's down_proj left dense: the role regex
    # for down_proj must not reach it (the library would pack it with uninitialised scales)
    ck = _checkpoint(tmp_path, [{"quantize": {"format": "int4", "group_size": 64,
                                              "exclude": ["model.layers.1.mlp.down_proj"]}}])
    want = _sparsekit_weights(ck)
    out = tmp_path / "ct"
    export(ck, "compressed-tensors", out, dtype="float32")
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert sorted(config["ignore"]) == ["lm_head", "model.layers.1.mlp.down_proj"]
    targets = [t for g in config["config_groups"].values() for t in g["targets"]]
    assert "re:.*mlp\\.down_proj$" not in targets and "model.layers.0.mlp.down_proj" in targets
    got = _library_decompress(out)
    assert "model.layers.1.mlp.down_proj" not in got and len(got) == 20
    for name, values in got.items():
        assert torch.equal(values, want[name]), name


# --- GGUF ------------------------------------------------------------------------------------------------------
def _gguf_weights(file: Path, config) -> dict[str, tuple[np.ndarray, str]]:
    """Every projection of a GGUF file, dequantized by `gguf`, by Hugging Face module name."""
    from sparsekit.export.gguf import _unpermute, read_back

    back = read_back(file)
    roles = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}
    out = {}
    for name, (values, kind) in back.items():
        parts = name.split(".")
        if parts[0] == "blk" and parts[2] in roles:
            if parts[2] in ("attn_q", "attn_k"):
                values = _unpermute(values, config.num_attention_heads if parts[2] == "attn_q" else
                                    config.num_key_value_heads)
            out[f"model.layers.{parts[1]}.{roles[parts[2]]}"] = (values, kind)
    return out


@pytest.mark.parametrize("recipe, kind, exact", [
    ([{"quantize": {"format": "int8"}}], "Q8_0", True),
    ([{"quantize": {"format": "int4", "group_size": 32}}], "Q4_0", True),
    ([MAG24, {"quantize": {"format": "int4", "group_size": 64}}], "Q4_0", True),
    ([{"quantize": {"format": "int4", "group_size": 0}}], "Q4_0", True),  # per channel: every block takes the row's
    ([{"quantize": {"format": "int4", "group_size": 32, "symmetric": False}}], "Q4_1", False),
])
def test_gguf_reads_back_sparsekits_weights(tmp_path, recipe, kind, exact):
    from transformers import AutoConfig

    ck = _checkpoint(tmp_path, recipe)
    want = _sparsekit_weights(ck)
    file = tmp_path / "m.gguf"
    summary = export(ck, "gguf", file)
    got = _gguf_weights(file, AutoConfig.from_pretrained(ck))
    assert got.keys() == want.keys()
    for name, values in want.items():
        data, found = got[name]
        assert found == kind, name
        err = np.abs(data - values.numpy()).max()
        if exact:
            assert err == 0, name
        else:  # Q4_1's offset m = -zero * scale is rounded to fp16: at most half an fp16 ulp of |m| <= 15 * scale
            bound = 15 * float(load_source(ck).projections[name].q.scales.max()) * 2.0 ** -11
            assert 0 < err <= bound or err == 0, (name, err, bound)
    assert summary["exact_quantized"] + summary["inexact_quantized"] == len(want) == 21
    assert summary["inexact_quantized"] == (0 if exact else summary["inexact_quantized"])


def test_gguf_metadata_and_tokenizer_are_what_llama_cpp_reads(tmp_path):
    import gguf

    ck = _checkpoint(tmp_path, [{"quantize": {"format": "int4", "group_size": 32}}])
    file = tmp_path / "m.gguf"
    summary = export(ck, "gguf", file)
    fields = gguf.GGUFReader(str(file)).fields
    value = {k: fields[k].contents() for k in ("general.architecture", "llama.block_count", "llama.embedding_length",
                                                 "llama.attention.head_count_kv", "tokenizer.ggml.model",
                                                 "tokenizer.ggml.pre", "tokenizer.ggml.eos_token_id")}
    assert value == {"general.architecture": "llama", "llama.block_count": 3, "llama.embedding_length": 64,
                     "llama.attention.head_count_kv": 2, "tokenizer.ggml.model": "gpt2",
                     "tokenizer.ggml.pre": "default", "tokenizer.ggml.eos_token_id": 2}
    tok = tiny_tokenizer()
    tokens = fields["tokenizer.ggml.tokens"].contents()
    assert tokens == [tok.convert_ids_to_tokens(i) for i in range(len(tok))]
    assert summary["tokenizer_pre"] == "default" and summary["tensor_types"]["Q4_0"] == 21


def test_gguf_qwen2_keeps_biases_and_rows(tmp_path):
    ck = _checkpoint(tmp_path, [{"quantize": {"format": "int8"}}], arch="qwen2")
    summary = export(ck, "gguf", tmp_path / "q.gguf")
    from sparsekit.export.gguf import read_back

    back = read_back(tmp_path / "q.gguf")
    assert summary["architecture"] == "qwen2" and summary["inexact_quantized"] == 0
    assert {"blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias"} <= back.keys()
    assert back["blk.0.attn_q.bias"][1] == "F32"


# --- refusals ---------------------------------------------------------------------------------------------------
def test_refusals_exit_2_with_one_line_and_leave_nothing(tmp_path, capsys):
    mx = _checkpoint(tmp_path, [{"quantize": {"format": "mxfp4"}}], name="mx")
    dense = _checkpoint(tmp_path, [MAG24], name="pruned")
    gemma = _checkpoint(tmp_path, [{"quantize": {"format": "int8"}}], arch="gemma", name="gemma")
    window = _checkpoint(tmp_path, [{"quantize": {"format": "int8"}}], arch="mistral", name="window")
    cases = [
        (["export", str(mx), "--to", "compressed-tensors", "--out", str(tmp_path / "o1")], "holds integer codes"),
        (["export", str(dense), "--to", "compressed-tensors", "--out", str(tmp_path / "o2")], "no quantized projection"),
        (["export", str(gemma), "--to", "gguf", "--out", str(tmp_path / "o4.gguf")], "'gemma'"),
        (["export", str(mx), "--to", "gguf", "--out", str(tmp_path / "o5.bin")], "a .gguf file name"),
        (["export", str(window), "--to", "gguf", "--out", str(tmp_path / "o7.gguf")], "sliding window of 8 tokens"),
        (["export", str(tmp_path), "--to", "gguf", "--out", str(tmp_path / "o6.gguf")], "not a sparsekit checkpoint"),
        (["export", str(mx), "--to", "gguf", "--out", str(mx)], "already exists"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("sparsekit export: error:") and message in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no temporary left behind


def test_per_block_widths_are_refused(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setenv("SPARSEKIT_DATA", str(data_dir))
    narrow = _checkpoint(tmp_path, [{"prune_channels": {"ratio": 0.25, "blocks": [1], "nsamples": 2}}], name="narrow",
                         nsamples=2, seqlen=32)
    for to, out in (("gguf", "o.gguf"), ("compressed-tensors", "o")):
        assert main(["export", str(narrow), "--to", to, "--out", str(tmp_path / out)]) == 2
        assert "per-block widths" in capsys.readouterr().err
        assert not (tmp_path / out).exists()


def test_formats_without_a_gguf_grid_are_requantized_with_the_error_stated(tmp_path):
    ck = _checkpoint(tmp_path, [{"quantize": {"format": "int3", "group_size": 32}}])
    summary = export(ck, "gguf", tmp_path / "i3.gguf")
    assert summary["tensor_types"]["Q4_0"] == 21 and summary["inexact_quantized"] == 21
    entry = summary["tensors"]["blk.0.ffn_down.weight"]
    assert entry["how"] == "int3 g32 re-quantized to Q4_0" and 0 < entry["max_abs_error"] < 0.1


def test_mxfp4_goes_to_gguf_mxfp4(tmp_path):
    ck = _checkpoint(tmp_path, [{"quantize": {"format": "mxfp4"}}])
    summary = export(ck, "gguf", tmp_path / "mx.gguf")
    assert summary["tensor_types"]["MXFP4"] == 21
    kinds = {e["how"] for e in summary["tensors"].values()}
    assert kinds == {"re-encoded by gguf"}
    assert all(e["max_abs_error"] == 0 for e in summary["tensors"].values())  # the same OCP block: exact


def test_cli_export_prints_a_summary_and_writes_json(tmp_path, capsys):
    ck = _checkpoint(tmp_path, [{"quantize": {"format": "int4", "group_size": 32}}])
    report = tmp_path / "summary.json"
    assert main(["export", str(ck), "--to", "gguf", "--out", str(tmp_path / "m.gguf"), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "21 quantized tensors bit-exact" in out and "saved" in out
    data = json.loads(report.read_text())
    assert data["command"].startswith("sparsekit export") and data["exact_quantized"] == 21


def test_exports_are_readable_by_other_accounts(tmp_path):
    import os
    import stat

    ck = _checkpoint(tmp_path, [{"quantize": {"format": "int4", "group_size": 32}}])
    export(ck, "gguf", tmp_path / "m.gguf")
    export(ck, "compressed-tensors", tmp_path / "ct")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "m.gguf").stat().st_mode) == 0o666 & ~mask  # not mkstemp's private 0600
    assert stat.S_IMODE((tmp_path / "ct").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE(ck.stat().st_mode) == 0o777 & ~mask  # the checkpoint folder too


def test_unknown_target_and_dtype(tmp_path):
    with pytest.raises(SparsekitError, match="unknown export target"):
        export(tmp_path, "onnx", tmp_path / "x")
    with pytest.raises(SparsekitError, match="--dtype"):
        export(tmp_path, "gguf", tmp_path / "x.gguf", dtype="int8")


# --- the default model (acceptance) -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2_int4(tmp_path_factory) -> Path:
    result = sparsekit.convert("smollm2-135m", [{"quantize": {"format": "int4", "group_size": 128}}], progress=False)
    return Path(sparsekit.save(result, tmp_path_factory.mktemp("smollm2") / "int4"))


@pytest.mark.slow
def test_smollm2_int4_g128_compressed_tensors_is_exact(smollm2_int4, tmp_path):
    want = _sparsekit_weights(smollm2_int4)
    summary = export(smollm2_int4, "compressed-tensors", tmp_path / "ct", dtype="float32")
    # K = 576 at g128 has a short last group: those rows are written at g64, down_proj (K = 1536) at g128
    assert summary["regrouped"] == ["group 128 written as group 64 (scales repeated; values exact)"]
    got = _library_decompress(tmp_path / "ct")
    assert got.keys() == want.keys() and len(want) == 210
    for name, values in want.items():
        assert torch.equal(got[name], values), name


@pytest.mark.slow
@pytest.mark.parametrize("fmt, kind", [("int4", "Q4_0"), ("int8", "Q8_0")])
def test_smollm2_gguf_is_exact_and_speaks_llama_cpps_tokenizer(smollm2_int4, tmp_path, fmt, kind):
    import gguf

    from sparsekit.models.loader import SHORT_NAMES

    ck = smollm2_int4
    if fmt == "int8":
        result = sparsekit.convert("smollm2-135m", [{"quantize": {"format": "int8"}}], progress=False)
        ck = Path(sparsekit.save(result, tmp_path / "int8"))
    file = tmp_path / "m.gguf"
    summary = export(ck, "gguf", file)
    assert summary["tensor_types"][kind] == 210 and summary["inexact_quantized"] == 0
    from transformers import AutoConfig

    got = _gguf_weights(file, AutoConfig.from_pretrained(ck))
    for name, values in _sparsekit_weights(ck).items():
        assert np.array_equal(got[name][0], values.numpy()), name
    ours = gguf.GGUFReader(str(file)).fields
    theirs = gguf.GGUFReader(str(SHORT_NAMES["smollm2-135m"].path())).fields  # written by llama.cpp's converter
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.pre",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "llama.rope.freq_base",
                "llama.attention.head_count_kv", "llama.context_length"):
        assert ours[key].contents() == theirs[key].contents(), key


def test_llama_cpp_runs_the_gguf_export_like_sparsekit(tmp_path):
    """The real reader: llama.cpp's logits for the tiny exported model match sparsekit's (runs where
    llama-cpp-python is installed; CI does not build it: ~8 minutes of C++ on 2 cores)."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    ck = _checkpoint(tmp_path, [{"quantize": {"format": "int8"}}])
    file = tmp_path / "m.gguf"
    export(ck, "gguf", file, dtype="float32")
    model, _ = sparsekit.load(ck)
    ids = [5, 17, 42, 99, 7, 250, 3, 64, 128, 11]
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    llm = llama_cpp.Llama(model_path=str(file), n_ctx=64, logits_all=True, verbose=False, n_threads=1)
    llm.eval(ids)
    got = np.asarray(llm.scores[: len(ids)])
    del llm
    # llama.cpp multiplies Q8_0 weights with activations rounded to 8 bits: close, not equal
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9


def test_a_missing_writer_library_says_how_to_install_it(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "compressed_tensors" else
                        real(name, *a))
    with pytest.raises(SparsekitError, match=r"pip install 'sparsekit\[export\]'"):
        export(tmp_path, "compressed-tensors", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_an_int8_lm_head_exports_as_its_own_scheme_and_q8_0(tmp_path):
    """A head packed by its own quantize step (untied from the embeddings): compressed-tensors gets a
    per-channel int8 scheme that targets lm_head (no longer ignored), GGUF an `output.weight` in Q8_0 next
    to a float `token_embd.weight`."""
    import gguf

    tok = tiny_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), tie_word_embeddings=True)
    recipe = [{"quantize": {"format": "int4", "group_size": 32}},
              {"quantize": {"format": "int8", "targets": [], "modules": ["lm_head"]}}]
    ck = Path(sparsekit.save(sparsekit.convert(model, recipe, tok, progress=False), tmp_path / "ck"))
    export(ck, "compressed-tensors", tmp_path / "ct")
    config = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    head = [g for g in config["config_groups"].values() if g["targets"] == ["lm_head"]]
    assert len(head) == 1 and head[0]["weights"]["num_bits"] == 8 and head[0]["weights"]["strategy"] == "channel"
    assert "lm_head" not in config["ignore"]
    export(ck, "gguf", tmp_path / "m.gguf")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors}
    assert types["output.weight"] == "Q8_0" and types["token_embd.weight"] in ("F16", "F32")
