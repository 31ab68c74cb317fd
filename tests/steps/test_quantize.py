"""Quantize steps over tiny models: RTN and GPTQ, after pruning, joint with SparseGPT, errors, storage."""

import pytest
import torch

from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import get_adapter
from sparsekit.prune.patterns import is_nm
from sparsekit.quant import get_format
from sparsekit.recipe import Quantize, Recipe, load_recipe
from sparsekit.steps.quantize import run_quantize
from tests.tiny import TINY, tiny_model


def _ids(n=4, seqlen=32, vocab=300, seed=0):
    return torch.randint(3, vocab, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def _on_grid(fmt, w):
    """Every group is code x scale with integer codes |code| <= qmax for one scale per group (GPTQ's
    scales come from compensated weights, so the group's largest code need not be qmax)."""
    x = w.reshape(-1, fmt.group_width(w.shape[1])).double()
    amax = x.abs().amax(1, keepdim=True).clamp(min=1e-30)
    ok = torch.zeros(x.shape[0], dtype=torch.bool)
    for k in range(1, fmt.qmax + 1):
        r = x / (amax / k)
        ok |= ((r - r.round()).abs() < 1e-3).all(1)
    return bool(ok.all())


@pytest.mark.parametrize("arch", sorted(TINY))
@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_every_architecture(arch, method):
    model = tiny_model(arch)
    adapter = get_adapter(model)
    step = Quantize(format="int4", group_size=16, method=method)
    result = run_quantize(model, adapter, step, _ids(), progress=False)
    assert len(result.modules) == adapter.num_blocks * len(adapter.spec.projections)
    fmt = get_format("int4", 16)
    for t in result.targets:
        assert _on_grid(fmt, adapter.linears(t.block)[t.rel].weight.data), t.name
        assert result.modules[t.name].format_bits_per_weight == pytest.approx(5.0)
    with torch.no_grad():
        assert torch.isfinite(model(_ids(1)).logits).all()


def test_gptq_beats_rtn_on_the_model_output():
    ids = _ids(8, 48)
    dense = tiny_model("llama")
    with torch.no_grad():
        ref = torch.log_softmax(dense(ids).logits, -1)

    def kl(method):
        model = tiny_model("llama")
        run_quantize(model, get_adapter(model), Quantize(format="int3", group_size=32, method=method), ids,
                     progress=False)
        with torch.no_grad():
            out = torch.log_softmax(model(ids).logits, -1)
        return float((ref.exp() * (ref - out)).sum(-1).mean())

    assert kl("gptq") < kl("rtn")


def test_prune_then_quantize_keeps_zeros_and_joint_runs_in_one_sweep():
    from sparsekit.recipe import Prune
    from sparsekit.steps.prune import run_prune

    for joint in (False, True):
        model = tiny_model("llama")
        adapter = get_adapter(model)
        q = Quantize(format="int4", group_size=32, method="gptq", joint=joint)
        pr = run_prune(model, adapter, Prune(method="sparsegpt", pattern="2:4"), _ids(), progress=False,
                       joint=q if joint else None)
        if not joint:
            run_quantize(model, adapter, q, _ids(), masks=pr.masks, progress=False)
        fmt = get_format("int4", 32)
        for t in pr.targets:
            w = adapter.linears(t.block)[t.rel].weight.data
            keep = pr.masks[t.name]
            assert is_nm(keep, 2, 4) and bool((w[~keep] == 0).all())
            assert _on_grid(fmt, w)  # kept weights on the int4 grid


def test_nan_weight_is_refused_naming_the_module_and_nothing_changes():
    model = tiny_model("llama")
    adapter = get_adapter(model)
    adapter.linears(1)["mlp.up_proj"].weight.data[0, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SparsekitError, match=r"model.layers.1.mlp.up_proj: 1 NaN/Inf value"):
        run_quantize(model, adapter, Quantize(format="int8"), progress=False)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) or torch.isnan(v).any() for k, v in before.items())
    assert torch.equal(before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"])


@pytest.mark.parametrize("recipe, message", [
    ([{"quantize": {"format": "int5"}}], "int8, int4, int3 and int2"),
    ([{"quantize": {"format": "mxfp4", "group_size": 64}}], "fixes the block at 32"),
    ([{"quantize": {"format": "int4", "method": "awq"}}], "method 'awq' is not one of rtn, gptq"),
    ([{"quantize": {"format": "splitquant-int4", "method": "gptq"}}], "use method: rtn"),
    ([{"quantize": {"format": "int4", "joint": True}}], "needs method: gptq"),
    ([{"quantize": {"format": "int4", "method": "gptq", "joint": True}}], "needs a prune step with method sparsegpt"),
    ([{"prune": {"method": "wanda"}}, {"quantize": {"format": "int4", "method": "gptq", "joint": True}}],
     "needs a prune step with method sparsegpt"),
    ([{"quantize": {"format": "int4"}}, {"prune": {"method": "wanda"}}], "put prune steps first"),
    ([{"quantize": {"format": "int4"}}, {"quantize": {"format": "int8"}}], "a recipe quantizes them once"),
    ([{"quantize": {"format": "int4"}}, {"quantize": {"format": "int8", "targets": [], "modules": ["lm_head"],
                                                      "method": "gptq"}}], "take method rtn"),
    ([{"quantize": {"format": "int4", "group_size": "big"}}], "group_size must be an integer"),
    ([{"quantize": {"format": "int4", "bits": 4}}], "unknown option"),
])
def test_bad_quantize_recipes(recipe, message):
    with pytest.raises(SparsekitError, match=message):
        Recipe.from_list(recipe)


def test_quantize_recipe_round_trip_and_builtins():
    r = Recipe.from_list([{"prune": {"method": "sparsegpt", "pattern": "2:4"}},
                          {"quantize": {"format": "int4", "method": "gptq", "joint": True}}])
    assert Recipe.from_yaml(r.to_yaml()).to_list() == r.to_list()
    assert r.describe() == "sparsegpt 2:4 (uniform) + int4 g128 gptq (joint)"
    assert load_recipe("int4-gptq").steps[0].method == "gptq"
    assert load_recipe("sparsegpt-2:4+int4-joint").steps[1].joint
