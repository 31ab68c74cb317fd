"""A LLaVA-style model (vision tower + projector + language model): the same steps reach the tower and the
projector through name patterns, and the language model is untouched unless targeted."""

import pytest
import torch
import transformers as T

import sparsekit
from sparsekit.api import compress
from sparsekit.errors import SparsekitError
from sparsekit.recipe import Recipe
from tests.tiny import tiny_config, tiny_tokenizer

IMAGE_TOKEN = 299


def tiny_llava(seed=0):
    torch.manual_seed(seed)
    vision = T.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                                image_size=32, patch_size=8, projection_dim=32)
    cfg = T.LlavaConfig(vision_config=vision, text_config=tiny_config("llama"), image_token_index=IMAGE_TOKEN)
    return T.LlavaForConditionalGeneration(cfg).eval()


def _inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 290, (1, 24), generator=g)
    ids[0, 2:18] = IMAGE_TOKEN  # 16 patches of 8x8 in a 32x32 image
    return ids, torch.randn(1, 3, 32, 32, generator=g)


def _lm_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "language_model" in k or "lm_head" in k}


def test_vision_tower_and_projector_by_name_patterns(tmp_path):
    model = tiny_llava()
    tok = tiny_tokenizer()
    lm = _lm_state(model)
    recipe = [{"drop_blocks": {"stack": "model.vision_tower.encoder.layers", "method": "last", "n": 1}},
              {"prune": {"method": "magnitude", "pattern": "2:4", "targets": [],
                         "modules": ["model.vision_tower.*", "model.multi_modal_projector.*"]}},
              {"quantize": {"format": "int4", "group_size": 32, "targets": [], "modules": ["model.multi_modal_projector.*"]}}]
    result = compress(model, recipe, tok, progress=False)
    assert len(model.model.vision_tower.encoder.layers) == 2 and model.config.vision_config.num_hidden_layers == 2
    names = set(result.masks)
    assert "model.vision_tower.encoder.layers.0.mlp.fc1" in names and "model.multi_modal_projector.linear_2" in names
    assert not any("language_model" in n for n in names)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in lm.items())  # the language model is untouched
    w = model.model.vision_tower.encoder.layers[1].self_attn.q_proj.weight
    assert float((w == 0).float().mean()) == 0.5
    ids, pixels = _inputs()
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=pixels).logits
    assert torch.isfinite(logits).all()
    path = sparsekit.save(result, tmp_path / "llava")
    loaded = T.LlavaForConditionalGeneration.from_pretrained(path).eval()  # a plain transformers folder too
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, pixel_values=pixels).logits, logits)


@pytest.mark.parametrize("recipe, message", [
    ([{"prune": {"method": "wanda", "targets": [], "modules": ["model.vision_tower.*"]}}], "take method magnitude"),
    ([{"quantize": {"format": "int4", "method": "gptq", "modules": ["model.multi_modal_projector.*"]}}],
     "take method rtn"),
    ([{"drop_blocks": {"stack": "model.vision_tower.encoder.layers", "method": "bi"}}], "takes method explicit or last"),
    ([{"prune": {"targets": [], "modules": []}}], "targets and modules are empty"),
])
def test_bad_multimodal_recipes(recipe, message):
    with pytest.raises(SparsekitError, match=message):
        Recipe.from_list(recipe)


def test_patterns_that_match_nothing_are_errors():
    model = tiny_llava()
    with pytest.raises(SparsekitError, match="match no nn.Linear outside the decoder blocks"):
        compress(model, [{"prune": {"method": "magnitude", "targets": [], "modules": ["model.audio.*"]}}],
                 tiny_tokenizer(), progress=False)
    with pytest.raises(SparsekitError, match="is not a ModuleList of blocks"):
        compress(model, [{"drop_blocks": {"stack": "model.vision_tower", "method": "last"}}], tiny_tokenizer(),
                 progress=False)
