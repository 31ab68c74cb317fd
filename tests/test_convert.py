"""sparsekit.convert: packed modules replace compressed projections and compute what the simulation computes."""

import pytest
import torch

import sparsekit
from sparsekit.api import compress, convert
from sparsekit.nn import PackedLinear, SparseQuantLinear
from sparsekit.ops import _dispatch
from sparsekit.eval.size import lm_head_precision
from sparsekit.quant import get_format

OPTS = dict(nsamples=4, seqlen=64, progress=False)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits.float()


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("recipe, kind", [
    ([{"prune": {"method": "sparsegpt", "pattern": "2:4"}}], "semi24"),
    ([{"prune": {"method": "sparsegpt", "pattern": "2:4"}},
      {"quantize": {"format": "int4", "group_size": 32, "method": "gptq", "joint": True}}], "int4_semi24"),
    ([{"quantize": {"format": "int4", "group_size": 32, "method": "gptq", "symmetric": False}}], "int4"),
    ([{"quantize": {"format": "mxfp4", "method": "rtn"}}], "mxfp4"),
    # channel permutation is folded into the weights: the packed model computes what the permuted one does
    ([{"prune": {"method": "ria", "pattern": "2:4", "permute": True, "dsnot": True}}], "semi24"),
    ([{"prune": {"method": "wanda", "sparsity": 0.5}}, {"quantize": {"format": "int4", "group_size": 32}}], "int4"),
])
def test_converted_model_matches_the_simulation(recipe, kind, tiny_dir, data_dir):
    simulated = compress(str(tiny_dir), recipe, data_dir=data_dir, **OPTS).model
    result = convert(str(tiny_dir), recipe, data_dir=data_dir, backend="reference", **OPTS)
    model = result.model
    assert set(result.packed.values()) == {kind} and len(result.packed) == 21
    assert all(type(model.get_submodule(n)) is PackedLinear and model.get_submodule(n).kind == kind
               for n in result.packed)
    for name, module in model.named_modules():  # the simulation's weights are exactly what the layouts hold
        if name in result.packed:
            assert torch.equal(module.dequantized_weight(), simulated.get_submodule(name).weight.float())
    ids = torch.randint(3, 300, (2, 40), generator=torch.Generator().manual_seed(0))
    assert rel(_logits(model, ids), _logits(simulated, ids)) < 1e-3
    assert torch.equal(model.get_submodule("model.embed_tokens").weight, simulated.get_submodule("model.embed_tokens").weight)
    out = model.generate(ids[:1, :8], max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 12)


def test_what_has_no_kernel_stays_dense_with_a_reason(tiny_dir, data_dir):
    recipe = [{"prune": {"method": "magnitude", "sparsity": 0.5, "targets": ["*.mlp.*"]}},
              {"quantize": {"format": "int3", "targets": ["*.self_attn.*"]}}]
    result = convert(str(tiny_dir), recipe, data_dir=data_dir, **OPTS)
    assert result.packed["model.layers.0.mlp.up_proj"].startswith("dense: unstructured mask")
    assert result.packed["model.layers.0.self_attn.q_proj"].startswith("dense: format int3: no packed kernel")
    assert type(result.model.get_submodule("model.layers.0.mlp.up_proj")) is torch.nn.Linear


def test_module_repr_backend_and_errors(tiny_dir, data_dir):
    result = convert(str(tiny_dir), [{"prune": {"method": "magnitude", "pattern": "2:4"}}], **OPTS)
    module = result.model.get_submodule("model.layers.1.mlp.down_proj")
    assert repr(module) == ("PackedLinear(in_features=96, out_features=64, layout=semi24, bits_per_weight=17.000, "
                            "bias=False, backend=auto)")
    module.backend = "reference"
    with pytest.raises(ValueError, match="backend must be one of"):
        module.backend = "fastest"
    assert sparsekit.convert is convert


@pytest.mark.triton
def test_triton_backend_runs_the_converted_model(tiny_dir, data_dir):
    if not (_dispatch.triton_interpret() or torch.cuda.is_available()):
        pytest.skip("needs TRITON_INTERPRET=1 or a GPU")
    recipe = [{"prune": {"method": "sparsegpt", "pattern": "2:4"}},
              {"quantize": {"format": "int4", "group_size": 32, "method": "gptq", "joint": True}}]
    result = convert(str(tiny_dir), recipe, data_dir=data_dir, backend="triton", **OPTS)
    ids = torch.randint(3, 300, (1, 24), generator=torch.Generator().manual_seed(1))
    got = _logits(result.model, ids)
    for name in result.packed:
        result.model.get_submodule(name).backend = "reference"
    assert rel(got, _logits(result.model, ids)) < 1e-3


def test_packed_checkpoint_round_trip_and_tamper(tiny_dir, data_dir, tmp_path):
    recipe = [{"prune": {"method": "sparsegpt", "pattern": "2:4"}},
              {"quantize": {"format": "int4", "group_size": 32, "method": "gptq", "joint": True}}]
    result = convert(str(tiny_dir), recipe, data_dir=data_dir, **OPTS)
    out = tmp_path / "ckpt"
    sparsekit.save(result, out)
    model, tok = sparsekit.load(out)
    assert model.get_submodule("model.layers.2.mlp.down_proj").kind == "int4_semi24"
    assert SparseQuantLinear is PackedLinear  # the name of earlier releases still resolves
    ids = torch.randint(3, 300, (2, 30), generator=torch.Generator().manual_seed(2))
    assert torch.equal(_logits(model, ids), _logits(result.model, ids))
    meta = __import__("json").loads((out / "sparsekit.json").read_text())
    assert meta["packed"]["model.layers.0.self_attn.q_proj"]["kind"] == "int4_semi24"
    assert set(meta["files"]) >= {"model.safetensors", "masks.safetensors"}
    # packed projections: 0.5 x (4 + 2) + 16 / 32 = 3.5 bits per weight, as the layout promises
    for name, rec in meta["packed"].items():
        module = model.get_submodule(name)
        nbytes = sum(b.numel() * b.element_size() for b in module.buffers())
        assert nbytes * 8 / (rec["shape"][0] * rec["shape"][1]) == pytest.approx(3.5)
    report = sparsekit.evaluate(str(out), seqlen=32, limit=1, data_dir=data_dir, progress=False)
    assert report["sparsity"] == 0.5
    # a flipped byte in a tensor file is refused, naming the file
    blob = bytearray((out / "model.safetensors").read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (out / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(sparsekit.SparsekitError, match="model.safetensors does not match the sha256"):
        sparsekit.load(out)


def test_mma_order_modules_compute_the_same_and_round_trip(tiny_dir, data_dir, tmp_path):
    recipe = [{"prune": {"method": "sparsegpt", "pattern": "2:4"}},
              {"quantize": {"format": "int4", "group_size": 32, "method": "gptq", "joint": True}}]
    plain = convert(str(tiny_dir), recipe, data_dir=data_dir, backend="reference", order="plain", **OPTS)
    mma = convert(str(tiny_dir), recipe, data_dir=data_dir, backend="reference", order="mma", **OPTS)
    # q/k/v/o, gate/up (in_features 64) take the sparse tensor cores' order; down (96 inputs) cannot
    assert mma.packed["model.layers.0.mlp.up_proj"] == "int4_semi24_mma"
    assert mma.packed["model.layers.0.mlp.down_proj"].startswith("int4_semi24 (plain order: ")
    assert "in_features % 64" in mma.packed["model.layers.0.mlp.down_proj"]
    for name in plain.packed:
        a, b = plain.model.get_submodule(name), mma.model.get_submodule(name)
        assert torch.equal(a.dequantized_weight(), b.dequantized_weight())
    ids = torch.randint(3, 300, (2, 30), generator=torch.Generator().manual_seed(3))
    assert torch.equal(_logits(mma.model, ids), _logits(plain.model, ids))
    with pytest.raises(ValueError, match="has no triton kernel"):
        mma.model.get_submodule("model.layers.0.mlp.up_proj").backend = "triton"
        _logits(mma.model, ids)
    mma.model.get_submodule("model.layers.0.mlp.up_proj").backend = "reference"
    sparsekit.save(mma, tmp_path / "mma")
    model, _ = sparsekit.load(tmp_path / "mma", backend="reference")  # (auto would take Triton under the interpreter)
    assert model.get_submodule("model.layers.1.self_attn.q_proj").kind == "int4_semi24_mma"
    assert torch.equal(_logits(model, ids), _logits(mma.model, ids))
    with pytest.raises(sparsekit.SparsekitError, match="layout order"):
        convert(str(tiny_dir), recipe, data_dir=data_dir, order="fast", **OPTS)


def test_save_a_converted_model_object(tiny_dir, tmp_path):
    result = convert(str(tiny_dir), [{"quantize": {"format": "mxfp4"}}], **OPTS)
    path = sparsekit.save(result.model, tmp_path / "m", tokenizer=result.tokenizer, note="by hand")
    model, _ = sparsekit.load(path)
    ids = torch.randint(3, 300, (1, 16), generator=torch.Generator().manual_seed(3))
    assert torch.equal(_logits(model, ids), _logits(result.model, ids))
    with pytest.raises(TypeError, match="takes what compress"):
        sparsekit.save("not a model", tmp_path / "x")


def test_a_model_saved_without_its_tokenizer_loads_with_none(tiny_dir, data_dir, tmp_path):
    """save(model) without a tokenizer writes no tokenizer files: load gives tokenizer None (AutoTokenizer would
    build the config's tokenizer class from nothing and fail), and evaluation and calibration say what they lack."""
    from sparsekit.errors import SparsekitError

    result = convert(str(tiny_dir), [{"prune": {"method": "magnitude", "pattern": "2:4"}}], **OPTS)
    path = sparsekit.save(result.model, tmp_path / "m")
    model, tokenizer = sparsekit.load(path)
    assert tokenizer is None
    ids = torch.randint(3, 300, (1, 16), generator=torch.Generator().manual_seed(3))
    assert torch.equal(_logits(model, ids), _logits(result.model, ids))
    with pytest.raises(SparsekitError, match="saved without a tokenizer, which evaluation needs"):
        sparsekit.evaluate(path, limit=1, seqlen=32, data_dir=data_dir, progress=False)
    with pytest.raises(SparsekitError, match="saved without a tokenizer, which calibration needs"):
        compress(path, [{"prune": {"method": "wanda", "sparsity": 0.5}}], data_dir=data_dir, **OPTS)


def test_load_keeps_the_stored_packed_dtypes(tiny_dir, tmp_path):
    result = convert(str(tiny_dir), [{"prune": {"method": "magnitude", "pattern": "2:4"}}], packed_dtype=torch.float16,
                     **OPTS)
    model, _ = sparsekit.load(sparsekit.save(result, tmp_path / "c"))  # dtype auto: fp32 for the dense rest
    module = model.get_submodule("model.layers.0.mlp.up_proj")
    assert module.values.dtype == torch.float16 and module.layout().bits_per_weight == 9.0
    assert model.get_submodule("model.embed_tokens").weight.dtype == torch.float32


def test_a_tied_lm_head_quantized_by_its_own_step_is_untied(tmp_path):
    """A second quantize step over `modules: [lm_head]` packs the head in int8 (the bytes every decoded
    token streams) while the input embeddings it was tied to keep their exact values, through save/load."""
    from tests.tiny import tiny_model, tiny_tokenizer

    model = tiny_model("llama", tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    embed = model.model.embed_tokens.weight.detach().clone()
    head_q = get_format("int8", 0).fake_quantize(embed)
    ids = torch.randint(3, 300, (1, 16), generator=torch.Generator().manual_seed(5))
    recipe = [{"quantize": {"format": "int4", "group_size": 32}},
              {"quantize": {"format": "int8", "targets": [], "modules": ["lm_head"]}}]
    result = convert(model, recipe, tokenizer=tiny_tokenizer(), progress=False)
    assert result.packed["lm_head"] == "int8" and isinstance(result.model.lm_head, PackedLinear)
    assert torch.equal(result.model.model.embed_tokens.weight, embed)  # the embeddings stay exact
    assert not result.model.config.tie_word_embeddings
    assert torch.equal(result.model.lm_head.layout().unpack(), head_q)  # the head is the int8 grid of the old weight
    assert "int8 per-channel rtn" in sparsekit.load_recipe(recipe).describe()
    model2, _ = sparsekit.load(sparsekit.save(result, tmp_path / "c"))
    assert isinstance(model2.lm_head, PackedLinear) and torch.equal(model2.model.embed_tokens.weight, embed)
    assert lm_head_precision(model2) == "int8 (packed)"
    assert torch.equal(_logits(model2, ids), _logits(result.model, ids))
    assert model2.generate(ids, max_new_tokens=3, do_sample=False).shape == (1, 19)


def test_two_quantize_steps_over_the_same_module_are_refused():
    from tests.tiny import tiny_model, tiny_tokenizer

    model = tiny_model("llama", tie_word_embeddings=True)
    recipe = [{"quantize": {"format": "int8", "targets": [], "modules": ["lm_head"]}},
              {"quantize": {"format": "int4", "group_size": 32, "targets": [], "modules": ["lm_*"]}}]
    with pytest.raises(sparsekit.SparsekitError, match="lm_head would be quantized by two steps"):
        compress(model, recipe, tokenizer=tiny_tokenizer(), progress=False)
