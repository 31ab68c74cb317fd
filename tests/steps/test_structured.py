"""drop_blocks: scores by hand, surgery that keeps every architecture consistent, recipes and errors."""

import math

import pytest
import torch

from sparsekit.api import compress
from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import get_adapter
from sparsekit.nn import use_dense_kernels
from sparsekit.prune.structured import angular_distance, angular_span_distances, block_influence, lowest
from sparsekit.recipe import DropBlocks, Recipe
from sparsekit.steps.structured import choose_blocks, run_drop_blocks
from tests.tiny import TINY, tiny_model


def _ids(n=4, seqlen=24, seed=0):
    return torch.randint(3, 300, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def test_block_influence_by_hand():
    x = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])        # two tokens
    y = torch.tensor([[[1.0, 1.0], [0.0, -3.0]]])       # cos = 1/sqrt(2) and -1
    assert block_influence([x], [y]) == pytest.approx(1 - (1 / math.sqrt(2) - 1) / 2)
    assert block_influence([x], [2 * x]) == pytest.approx(0.0, abs=1e-7)  # scaling only: no influence


def test_angular_distance_by_hand_and_best_span():
    e = torch.eye(3)
    assert angular_distance(e[:1], e[1:2]) == pytest.approx(0.5)            # orthogonal: 90 degrees
    assert angular_distance(e[:1], -e[:1]) == pytest.approx(1.0)
    rot = lambda deg: torch.tensor([[math.cos(math.radians(deg)), math.sin(math.radians(deg))]])  # noqa: E731
    hidden = [rot(0), rot(40), rot(45), rot(50), rot(120)]                    # entering blocks 0..3, then output
    d = angular_span_distances(hidden, 2)
    assert d == pytest.approx([45 / 180, 10 / 180, 75 / 180], abs=1e-6)
    step = DropBlocks(n=2, method="angular")
    assert choose_blocks(step, 4, {"angular": d}) == [1, 2]
    assert lowest([0.3, 0.1, 0.2, 0.1], 2) == [1, 3]
    with pytest.raises(SparsekitError, match="n=5 blocks is impossible"):
        angular_span_distances(hidden, 5)


@pytest.mark.parametrize("arch", sorted(TINY))
@pytest.mark.parametrize("method", ["bi", "angular", "last"])
def test_drop_one_block_everywhere(arch, method):
    model = tiny_model(arch)
    adapter = get_adapter(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    total = sum(p.numel() for p in model.parameters())
    out = run_drop_blocks(model, adapter, DropBlocks(n=1, method=method, nsamples=2), _ids(), progress=False)
    assert len(out.removed) == 1 and adapter.num_blocks == 2 and model.config.num_hidden_layers == 2
    assert sum(p.numel() for p in model.parameters()) == total - out.params_removed
    block_params = sum(p.numel() for n, p in tiny_model(arch).named_parameters() if ".layers.0." in n)
    assert out.params_removed == block_params
    # kept blocks are bit-identical and renumbered; the rest of the model is untouched
    after = model.state_dict()
    for j, i in enumerate(out.kept):
        for key, value in before.items():
            if f".layers.{i}." in key:
                assert torch.equal(after[key.replace(f".layers.{i}.", f".layers.{j}.")], value)
    assert torch.equal(after["lm_head.weight"], before["lm_head.weight"])
    assert [m.layer_idx for m in model.modules() if hasattr(m, "layer_idx") and "Attention" in type(m).__name__] == [0, 1]
    types = getattr(model.config, "layer_types", None)
    if types is not None:
        assert len(types) == 2
    ids = _ids(1, 12)
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape == (1, 15)


def test_removed_block_is_the_bypass_of_the_full_model():
    """After removing block 1, the model computes blocks 0, 2 on the residual stream: same as running the
    original with block 1 replaced by the identity."""
    ids = _ids(1, 10)
    ref = tiny_model("llama")
    ref.model.layers[1].forward = lambda hidden_states, *a, **k: hidden_states
    model = tiny_model("llama")
    run_drop_blocks(model, get_adapter(model), DropBlocks(method="explicit", blocks=[1]), progress=False)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits)


def test_removing_zero_blocks_is_the_identity():
    model = tiny_model("gemma2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = run_drop_blocks(model, get_adapter(model), DropBlocks(n=0), progress=False)
    assert out.removed == [] and out.params_removed == 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_sliding_window_layer_types_follow_their_blocks():
    model = tiny_model("gemma3_text")  # sliding, full, sliding
    run_drop_blocks(model, get_adapter(model), DropBlocks(method="explicit", blocks=[0]), progress=False)
    assert model.config.layer_types == ["full_attention", "sliding_attention"]


def test_compress_saves_and_reloads_a_shorter_model(tiny_dir, data_dir, tmp_path):
    import sparsekit

    result = compress(str(tiny_dir), [{"drop_blocks": {"n": 1, "method": "bi", "nsamples": 2}},
                                      {"prune": {"method": "wanda", "pattern": "2:4"}}],
                      nsamples=4, seqlen=32, data_dir=data_dir, progress=False)
    assert result.model.config.num_hidden_layers == 2 and len(result.masks) == 2 * 7
    path = sparsekit.save(result, tmp_path / "short")
    model, _ = sparsekit.load(path)
    use_dense_kernels(result.model, "head")  # the loaded model's head kernel (sparsekit.load): like for like
    ids = _ids(1, 16)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, result.model(ids).logits)
    result.model.save_pretrained(tmp_path / "hf")  # a plain transformers folder works too
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "hf").config.num_hidden_layers == 2


@pytest.mark.parametrize("recipe, message", [
    ([{"drop_blocks": {"n": -1}}], "n must be a whole number"),
    ([{"drop_blocks": {"method": "random"}}], "not one of bi, angular, last, explicit"),
    ([{"drop_blocks": {"blocks": [1]}}], "only read by method 'explicit'"),
    ([{"drop_blocks": {"tokens": "first"}}], "tokens must be 'last' or 'all'"),
    ([{"prune": {"method": "wanda"}}, {"drop_blocks": {"n": 1}}], "structured steps go first"),
])
def test_bad_structured_recipes(recipe, message):
    with pytest.raises(SparsekitError, match=message):
        Recipe.from_list(recipe)


def test_impossible_requests_change_nothing():
    model = tiny_model("llama")
    adapter = get_adapter(model)
    with pytest.raises(SparsekitError, match="would remove every one of the 3 blocks"):
        run_drop_blocks(model, adapter, DropBlocks(n=3, method="last"), progress=False)
    with pytest.raises(SparsekitError, match="block 7 does not exist"):
        run_drop_blocks(model, adapter, DropBlocks(method="explicit", blocks=[7]), progress=False)
    assert adapter.num_blocks == 3


def test_nri_by_hand_and_budget_choice():
    from sparsekit.prune.structured import choose_under_budget, nri

    assert nri(2.0, 2.2, 100) == pytest.approx(0.1 / 100)
    scores = {"a": 0.1, "b": 0.05, "c": 0.2}
    assert choose_under_budget(scores, {"a": 40, "b": 70, "c": 10}, 100) == ["b", "c"]  # a no longer fits


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "gemma2", "gemma3_text", "phi3", "mixtral"])
def test_drop_sublayers_keeps_generate_and_counts(arch):
    from sparsekit.recipe import DropSublayers
    from sparsekit.steps.structured import run_drop_sublayers

    model = tiny_model(arch)
    adapter = get_adapter(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    total = sum(p.numel() for p in model.parameters())
    out = run_drop_sublayers(model, adapter, DropSublayers(attention=1, mlp=1, nsamples=2), _ids(), progress=False)
    kinds = sorted(k for _, k in out.removed)
    assert kinds == ["attention", "mlp"]
    assert sum(p.numel() for p in model.parameters()) == total - out.params_removed
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k in after)  # what stays is untouched
    assert len(after) < len(before)
    ids = _ids(1, 12)
    with torch.no_grad():
        full = model(ids).logits
    gen = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert gen.shape == (1, 16)
    with torch.no_grad():  # the KV cache still tracks positions: cached decoding equals a full recompute
        cached = model(gen[:, :-1], use_cache=False).logits[:, -1]
        assert gen[0, -1] == cached.argmax(-1)[0]
    assert torch.isfinite(full).all()


def test_sublayer_removal_is_the_residual_bypass():
    from sparsekit.models.surgery import drop_sublayer

    ids = _ids(1, 10)
    ref = tiny_model("llama")
    ref.model.layers[1].mlp.forward = lambda x: torch.zeros_like(x)
    model = tiny_model("llama")
    drop_sublayer(get_adapter(model), 1, "mlp")
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits)
    with pytest.raises(SparsekitError, match="already removed"):
        drop_sublayer(get_adapter(model), 1, "mlp")


def test_checkpoint_with_removed_sublayers_and_a_prune_step(tiny_dir, data_dir, tmp_path):
    import sparsekit

    recipe = [{"drop_sublayers": {"attention": 1, "mlp": 0, "nsamples": 2}}, {"prune": {"method": "wanda",
                                                                                     "pattern": "2:4"}}]
    result = sparsekit.convert(str(tiny_dir), recipe, nsamples=4, seqlen=32, data_dir=data_dir, progress=False)
    assert len(result.masks) == 3 * 7 - 4  # the removed attention's q/k/v/o are not pruned
    path = sparsekit.save(result, tmp_path / "c")
    model, _ = sparsekit.load(path)
    ids = _ids(1, 16)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, result.model(ids).logits)
    report = sparsekit.evaluate(str(path), seqlen=32, limit=1, data_dir=data_dir, progress=False)
    assert report["sparsity"] == 0.5


@pytest.mark.parametrize("options, message", [
    ({}, "nothing to remove"),
    ({"budget": 0.1, "attention": 1}, "either budget"),
    ({"attention": -1}, "count of sublayers"),
    ({"budget": 0.1, "candidates": ["heads"]}, "candidates must be"),
])
def test_bad_drop_sublayers(options, message):
    with pytest.raises(SparsekitError, match=message):
        Recipe.from_list([{"drop_sublayers": options}])


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_generate_without_the_first_attention_matches_recompute(arch):
    """Block 0's cache slot is where transformers reads the sequence length: the stub keeps it right."""
    from sparsekit.models.surgery import drop_sublayer

    model = tiny_model(arch)
    drop_sublayer(get_adapter(model), 0, "attention")
    ids = _ids(1, 9, seed=5)
    gen = model.generate(ids, max_new_tokens=6, do_sample=False)
    with torch.no_grad():
        full = model(gen, use_cache=False).logits[0, ids.shape[1] - 1:-1].argmax(-1)
    assert torch.equal(gen[0, ids.shape[1]:], full)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2", "gemma3_text", "phi3"])
@pytest.mark.parametrize("kind", ["channels", "heads"])
def test_width_pruning_shrinks_tensors_and_keeps_generate(arch, kind):
    from sparsekit.recipe import PruneChannels, PruneHeads
    from sparsekit.steps.structured import run_prune_width

    model = tiny_model(arch)
    adapter = get_adapter(model)
    total = sum(p.numel() for p in model.parameters())
    step = PruneChannels(ratio=0.25, round_to=8, nsamples=2) if kind == "channels" else \
        PruneHeads(ratio=0.5, nsamples=2)
    out = run_prune_width(model, adapter, step, _ids(), progress=False)
    assert out.params_removed > 0
    assert sum(p.numel() for p in model.parameters()) == total - out.params_removed
    lin = adapter.linears(0)
    if kind == "channels":  # 96 channels - 25% = 72 (a multiple of 8)
        down = next(m for r, m in lin.items() if adapter.role(r) == "down")
        assert down.in_features == 72 and set(out.scores["kept"].values()) == {72}
    else:  # 2 KV groups of 2 query heads, head_dim 16: one group left
        o = next(m for r, m in lin.items() if adapter.role(r) == "o")
        assert o.in_features == 2 * 16 and set(out.scores["kept"].values()) == {1}
    ids = _ids(1, 12)
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    gen = model.generate(ids, max_new_tokens=4, do_sample=False)
    with torch.no_grad():
        full = model(gen, use_cache=False).logits[0, 11:-1].argmax(-1)
    assert torch.equal(gen[0, 12:], full)


def test_keeping_everything_is_the_identity_and_scores_by_hand():
    from sparsekit.models.surgery import prune_kv_groups, prune_mlp_channels
    from sparsekit.prune.structured import channel_scores, keep_top, kv_group_scores

    w = torch.tensor([[3.0, 0.0, 1.0, 0.0], [4.0, 1.0, 0.0, 0.0]])
    s = torch.tensor([1.0, 100.0, 4.0, 9.0])
    assert channel_scores(w, s).tolist() == pytest.approx([5.0, 10.0, 2.0, 0.0])
    assert kv_group_scores(w, s, head_dim=1, heads_per_group=2).tolist() == pytest.approx([15.0, 2.0])
    assert keep_top(channel_scores(w, s), 2).tolist() == [0, 1]
    model = tiny_model("llama")
    ids = _ids(1, 10)
    with torch.no_grad():
        ref = model(ids).logits
    adapter = get_adapter(model)
    prune_mlp_channels(adapter, 0, torch.arange(96))
    prune_kv_groups(adapter, 1, torch.arange(2))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref)
    with pytest.raises(SparsekitError, match="keep at least one of the 2 KV groups"):
        prune_kv_groups(adapter, 0, torch.tensor([2]))
    with pytest.raises(SparsekitError, match="for MoE models prune experts"):
        prune_mlp_channels(get_adapter(tiny_model("mixtral")), 0, torch.arange(4))


def test_shrunk_checkpoint_round_trip(tiny_dir, data_dir, tmp_path):
    import sparsekit

    recipe = [{"prune_heads": {"ratio": 0.5, "nsamples": 2}}, {"prune_channels": {"ratio": 0.25, "nsamples": 2}},
              {"prune": {"method": "sparsegpt", "pattern": "2:4"}}]
    result = sparsekit.convert(str(tiny_dir), recipe, nsamples=4, seqlen=32, data_dir=data_dir, progress=False)
    path = sparsekit.save(result, tmp_path / "w")
    model, _ = sparsekit.load(path)
    ids = _ids(1, 16)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, result.model(ids).logits)
    assert model.model.layers[0].mlp.down_proj.in_features == 72


@pytest.mark.parametrize("recipe, message", [
    ([{"prune_heads": {"ratio": 1.0}}], r"ratio must be in \[0, 1\)"),
    ([{"prune_channels": {"round_to": 0}}], "round_to must be an integer >= 1"),
    ([{"prune_channels": {"blocks": [-1]}}], "blocks must be a list of block indices"),
])
def test_bad_width_recipes(recipe, message):
    with pytest.raises(SparsekitError, match=message):
        Recipe.from_list(recipe)


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe"])
def test_prune_experts_keeps_routing_valid(arch):
    from sparsekit.models.surgery import num_experts
    from sparsekit.recipe import PruneExperts
    from sparsekit.steps.structured import run_prune_experts

    model = tiny_model(arch)  # 4 experts, top-2
    adapter = get_adapter(model)
    total = sum(p.numel() for p in model.parameters())
    out = run_prune_experts(model, adapter, PruneExperts(ratio=0.75, nsamples=2), _ids(), progress=False)
    assert sum(p.numel() for p in model.parameters()) == total - out.params_removed
    for i in range(adapter.num_blocks):
        assert num_experts(adapter, i) == 1 and adapter.experts(i).gate_up_proj.shape[0] == 1
        assert adapter.router(i).top_k == 1  # top-k <= experts left
        assert sum(out.scores["tokens_per_expert"][str(i)]) == 2 * 24 * 2  # every token routed to top-2
    ids = _ids(1, 10)
    gen = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert gen.shape == (1, 13)


def test_expert_usage_by_hand_and_the_kept_expert_is_the_used_one():
    from sparsekit.models.surgery import prune_experts
    from sparsekit.prune.structured import expert_usage

    logits = torch.tensor([[5.0, 0.0, 4.0], [0.0, 5.0, 4.0], [5.0, 4.0, 0.0]])
    counts, weight = expert_usage(logits, 2)
    assert counts.tolist() == [2, 2, 2]
    counts, _ = expert_usage(logits, 1)
    assert counts.tolist() == [2, 1, 0]
    model = tiny_model("mixtral")
    adapter = get_adapter(model)
    kept = adapter.experts(0).down_proj[2].detach().clone()
    prune_experts(adapter, 0, torch.tensor([2]))
    assert torch.equal(adapter.experts(0).down_proj[0], kept)
    with pytest.raises(SparsekitError, match="no mixture of experts"):
        prune_experts(get_adapter(tiny_model("llama")), 0, torch.tensor([0]))


def test_moe_checkpoint_restores_expert_counts(tmp_path):
    import sparsekit
    from sparsekit.models.surgery import prune_experts
    from tests.tiny import tiny_tokenizer

    model = tiny_model("mixtral")
    adapter = get_adapter(model)
    prune_experts(adapter, 1, torch.tensor([0, 3]))
    path = sparsekit.save(model, tmp_path / "moe", tokenizer=tiny_tokenizer())
    loaded, _ = sparsekit.load(path)
    use_dense_kernels(model, "head")  # the loaded model's head kernel (sparsekit.load): like for like
    ids = _ids(1, 10)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_moe_pruner_inside_experts(pattern):
    from sparsekit.prune.patterns import is_nm
    from sparsekit.recipe import Prune
    from sparsekit.steps.prune import run_prune

    model = tiny_model("mixtral")
    adapter = get_adapter(model)
    out = run_prune(model, adapter, Prune(method="wanda", sparsity=0.5, pattern=pattern, experts=True), _ids(),
                    progress=False)
    name = "model.layers.0.mlp.experts.gate_up_proj"
    mask = out.masks[name]
    assert mask.shape == (4, 2 * 96, 64) and out.modules[name].sparsity == pytest.approx(0.5)
    param = adapter.experts(0).gate_up_proj
    assert bool((param[~mask] == 0).all())
    if pattern == "2:4":
        assert all(is_nm(mask[e], 2, 4) for e in range(4))
    with torch.no_grad():
        assert torch.isfinite(model(_ids(1, 10)).logits).all()


def test_moe_pruner_score_weights_tokens_by_their_gate():
    from sparsekit.prune.moe_pruner import accumulate_expert_stats

    hidden = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    index = torch.tensor([[0], [1]])
    weights = torch.tensor([[0.5], [1.0]])
    gate_up = torch.ones(2, 2, 2)
    stats: dict = {}
    accumulate_expert_stats(stats, hidden, index, weights, gate_up, torch.nn.functional.silu)
    assert stats["gate_up"].tolist() == [[0.25, 0.0], [0.0, 4.0]]  # (gate x input)^2 per expert and channel
    with pytest.raises(SparsekitError, match="use method: wanda"):
        Recipe.from_list([{"prune": {"method": "magnitude", "experts": True}}])


def test_moe_pruned_model_packs_saves_and_loads(tmp_path):
    import sparsekit
    from sparsekit.recipe import Prune
    from sparsekit.steps.convert import pack_modules
    from sparsekit.steps.prune import run_prune
    from tests.tiny import tiny_tokenizer

    model = tiny_model("mixtral")
    out = run_prune(model, get_adapter(model), Prune(method="wanda", pattern="2:4", experts=True), _ids(),
                    progress=False)
    report = pack_modules(model, out.masks, {})
    assert report["model.layers.0.self_attn.q_proj"] == "semi24"
    assert report["model.layers.0.mlp.experts.down_proj"].startswith("dense: fused expert")
    path = sparsekit.save(model, tmp_path / "moe", tokenizer=tiny_tokenizer())
    loaded, _ = sparsekit.load(path)
    use_dense_kernels(model, "head")  # the loaded model's head kernel (sparsekit.load): like for like
    ids = _ids(1, 10)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_cosine_sublayer_score_is_one_minus_the_output_cosine():
    from sparsekit.recipe import DropSublayers
    from sparsekit.steps.structured import run_drop_sublayers, sublayer_scores

    model = tiny_model("llama")
    adapter = get_adapter(model)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.zero_()  # block 1's MLP adds nothing: its score must be 0
    step = DropSublayers(mlp=1, candidates=["mlp"], score="cosine", nsamples=2)
    scores, params, base = sublayer_scores(model, adapter, step, _ids(), progress=False)
    assert base is None and set(scores) == {(0, "mlp"), (1, "mlp"), (2, "mlp")}
    # Independent of the calibrator and of the surgery: one plain forward with hooks. A Llama block ends in
    # `h + mlp(norm(h))`, so without its MLP block i outputs out_i - mlp_i.
    outs, mlps, hooks = {}, {}, []
    for i, layer in enumerate(model.model.layers):
        hooks.append(layer.register_forward_hook(
            lambda m, a, o, i=i: outs.__setitem__(i, o[0] if isinstance(o, tuple) else o)))
        hooks.append(layer.mlp.register_forward_hook(lambda m, a, o, i=i: mlps.__setitem__(i, o)))
    with torch.no_grad():
        model(_ids()[:2], use_cache=False)  # the first nsamples windows
    for h in hooks:
        h.remove()
    for i in range(3):
        cos = torch.nn.functional.cosine_similarity(outs[i], outs[i] - mlps[i], dim=-1)  # per token
        assert scores[(i, "mlp")] == pytest.approx(float(1 - cos.mean()), rel=1e-4, abs=1e-6)
    assert scores[(1, "mlp")] == pytest.approx(0.0, abs=1e-6) and min(scores[(0, "mlp")], scores[(2, "mlp")]) > 1e-4
    out = run_drop_sublayers(model, adapter, step, _ids(), progress=False)
    assert out.removed == [[1, "mlp"]] and "cosine" in out.scores
