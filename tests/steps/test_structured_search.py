"""structured_search: budgets respected, every architecture, bias compensation exact in the mean,
re-measurement between rounds, checkpoints that restore widths and added biases, clear refusals."""

import pytest
import torch

import sparsekit
from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import get_adapter
from sparsekit.models.surgery import add_bias, prune_mlp_channels
from sparsekit.nn import use_dense_kernels
from sparsekit.recipe import Recipe, StructuredSearch
from sparsekit.steps import structured_search as ss
from tests.tiny import TINY, tiny_model


def _ids(n=4, seqlen=24, seed=0):
    return torch.randint(3, 300, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def _block_params(model):
    return sum(p.numel() for b in get_adapter(model).blocks for p in b.parameters())


@pytest.mark.parametrize("arch", sorted(a for a in TINY if a not in ("mixtral", "qwen2_moe")))
@pytest.mark.parametrize("compensate", [True, False])
def test_budget_is_respected_on_every_dense_architecture(arch, compensate):
    model = tiny_model(arch)
    adapter = get_adapter(model)
    before = _block_params(model)
    step = StructuredSearch(budget=0.3, rounds=2, channel_group=8, bias_compensation=compensate, nsamples=4)
    out = ss.run_structured_search(model, adapter, step, _ids(), progress=False)
    removed = before - _block_params(model)
    assert out.params_removed == removed and out.params_before == before
    assert removed <= 0.3 * before  # never over
    assert removed >= 0.3 * before - 2 * 8 * 3 * 64 - 2 * 4 * 16 * 64  # short by less than a few units
    assert len(out.rounds) == 2 and set(out.widths) == {"0", "1", "2"}
    with torch.no_grad():
        assert torch.isfinite(model(_ids(1)).logits).all()
    gen = model.generate(_ids(1, 6), max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert gen.shape == (1, 9)


def test_a_budget_of_the_model_counts_every_parameter():
    """`budget_of: model`: the share is of all parameters (embeddings, head), still taken from the blocks;
    a share larger than the blocks hold is refused before anything changes."""
    model = tiny_model("llama")
    total, before = sum(p.numel() for p in model.parameters()), _block_params(model)
    step = StructuredSearch(budget=0.2, budget_of="model", rounds=2, channel_group=8, nsamples=4)
    out = ss.run_structured_search(model, get_adapter(model), step, _ids(), progress=False)
    assert 0.2 * total - 2 * 8 * 3 * 64 - 2 * 4 * 16 * 64 <= out.params_removed <= 0.2 * total
    assert out.params_removed > 0.2 * before  # more than the same share of the blocks alone
    fresh = tiny_model("llama")
    state = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(SparsekitError, match="not less than all"):
        ss.run_structured_search(fresh, get_adapter(fresh), StructuredSearch(budget=0.99, budget_of="model"),
                                 _ids(), progress=False)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe"])
def test_moe_channels_are_refused_heads_and_sublayers_work(arch):
    model = tiny_model(arch)
    with pytest.raises(SparsekitError, match="mixtures of experts"):
        ss.run_structured_search(model, get_adapter(model), StructuredSearch(budget=0.1), _ids(), progress=False)
    step = StructuredSearch(budget=0.2, candidates=["heads", "sublayers"], nsamples=4, rounds=1)
    out = ss.run_structured_search(model, get_adapter(model), step, _ids(), progress=False)
    assert 0 < out.params_removed <= 0.2 * out.params_before


def test_bias_compensation_keeps_the_output_mean_exactly():
    torch.manual_seed(0)
    model = tiny_model("llama")
    adapter = get_adapter(model)
    down = adapter.linears(0)["mlp.down_proj"]
    x = torch.randn(50, down.in_features) + torch.randn(down.in_features)
    ref = down(x).mean(0)
    keep = torch.arange(0, down.in_features, 2)
    prune_mlp_channels(adapter, 0, keep, x.mean(0))
    new = adapter.linears(0)["mlp.down_proj"]
    assert new.bias is not None and new.in_features == keep.numel()
    torch.testing.assert_close(new(x[:, keep]).mean(0), ref, rtol=1e-4, atol=1e-5)
    add_bias(adapter, 0, "mlp.down_proj", torch.ones(new.out_features))  # adds to an existing bias
    torch.testing.assert_close(adapter.linears(0)["mlp.down_proj"].bias, new.bias)


def test_rounds_re_measure_the_shrunk_model(monkeypatch):
    calls = []
    real = ss.measure

    def counting(model, adapter, *args, **kw):
        calls.append(sum(p.numel() for p in model.parameters()))
        return real(model, adapter, *args, **kw)

    monkeypatch.setattr(ss, "measure", counting)
    model = tiny_model("llama")
    ss.run_structured_search(model, get_adapter(model), StructuredSearch(budget=0.3, rounds=3, channel_group=8,
                                                                        nsamples=4), _ids(), progress=False)
    assert len(calls) == 3 and calls[0] > calls[1] > calls[2]  # each round sees the model the last one shrank


def test_choice_takes_the_cheapest_per_cost_and_excludes_a_sublayer_with_its_units():
    C = ss.Candidate
    cands = [C(0, "channels", [1], 0.1, 10), C(0, "mlp", [], 0.5, 100), C(1, "heads", [0], 0.05, 10),
             C(1, "attention", [], 0.2, 40), C(2, "channels", [3], 5.0, 10)]
    chosen = ss.choose(cands, 60)
    kinds = [(c.block, c.kind) for c in chosen]
    # by score per cost: heads (0.005), channels of block 0 (0.01); attention 1 (0.005) is excluded because its
    # own KV group was taken this round; mlp 0 does not fit; the costly channels of block 2 fill what is left
    assert kinds == [(1, "heads"), (0, "channels"), (2, "channels")]
    assert ss.choose(cands, 15) == [cands[2]]


def test_saved_search_loads_with_widths_and_biases(tiny_dir, data_dir, tmp_path):
    recipe = [{"structured_search": {"budget": 0.25, "rounds": 2, "channel_group": 8, "nsamples": 4}}]
    result = sparsekit.compress(str(tiny_dir), recipe, nsamples=4, seqlen=32, data_dir=data_dir, progress=False)
    record = result.steps[0]
    assert record.step == "structured_search" and record.params_removed > 0
    path = sparsekit.save(result, tmp_path / "s")
    model, _ = sparsekit.load(path)
    use_dense_kernels(result.model, "head")  # the loaded model's head kernel (sparsekit.load): like for like
    ids = _ids(1, 16)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, result.model(ids).logits)
    assert any(lin.bias is not None for lin in get_adapter(model).linears(0).values()) or \
        any(w["channels"] == 0 or w["kv_groups"] == 0 for w in record.widths.values())
    assert Recipe.from_yaml(Recipe.from_list(recipe).to_yaml()) == Recipe.from_list(recipe)


def test_speedup_budget_spends_the_cost_model_and_measures(monkeypatch):
    """The cost model's seconds are the budget (a fixed model here: timings of a tiny model are noise);
    the profile itself gives non-negative per-block costs."""
    model = tiny_model("llama", num_hidden_layers=2)
    adapter = get_adapter(model)
    profiled = ss.profile_costs(model, adapter, reps=3)
    assert profiled.total > 0 and min(profiled.mlp_fixed, profiled.mlp_per_channel, profiled.attn_fixed,
                                      profiled.attn_per_group) >= 0
    fixed = ss.CostModel("seconds", mlp_fixed=1.0, mlp_per_channel=0.1, attn_fixed=1.0, attn_per_group=2.0, total=40.0)
    monkeypatch.setattr(ss, "profile_costs", lambda *a, **k: fixed)
    step = StructuredSearch(speedup=1.3, rounds=2, channel_group=8, nsamples=2)
    out = ss.run_structured_search(model, adapter, step, _ids(2), progress=False)
    assert set(out.speedup) == {"target", "predicted", "measured", "seconds_before", "seconds_after"}
    saved = 40.0 * (1 - 1 / 1.3)
    assert 1.0 < out.speedup["predicted"] <= 1.3 + 1e-9
    assert 40.0 / out.speedup["predicted"] >= 40.0 - saved - 1e-9
    assert out.params_removed > 0


@pytest.mark.parametrize("options, message", [
    ({}, "exactly one of budget"),
    ({"budget": 0.1, "speedup": 1.2}, "exactly one of budget"),
    ({"budget": 0}, "budget must be > 0"),
    ({"speedup": 0.9}, r"speedup must be in \(1, 10\)"),
    ({"budget": 0.1, "candidates": ["experts"]}, "candidates must be a non-empty list of heads, channels, sublayers"),
    ({"budget": 0.1, "rounds": 0}, "rounds must be an integer >= 1"),
    ({"budget": 0.1, "budget_of": "layers"}, "budget_of must be blocks or model"),
])
def test_bad_options(options, message):
    with pytest.raises(SparsekitError, match=message):
        StructuredSearch(**options)


def _brute_fisher(model, block, ids, mean_mlp, mean_o, groups):
    """1/2 sum_t (g_t . d_t)^2 written out: per-token gradients at the down / o projections' and the
    sublayers' outputs (retain_grad), the perturbations built from their inputs, one candidate at a time."""
    adapter = get_adapter(model)
    seen = {}
    down = adapter.linears(block)[ss._role_rel(adapter, block, "down")]
    o = adapter.linears(block)[ss._role_rel(adapter, block, "o")]

    def keep(name):
        def hook(_m, args, out):
            y = out[0] if isinstance(out, tuple) else out
            y.retain_grad()
            seen[name] = (args[0].detach() if args else None, y)
        return hook
    hs = [down.register_forward_hook(keep("down")), o.register_forward_hook(keep("o")),
          adapter.mlp(block).register_forward_hook(keep("mlp")),
          adapter.attention(block).register_forward_hook(keep("attention"))]
    total = {"channels": torch.zeros(down.in_features), "groups": torch.zeros(groups), "mlp": 0.0, "attention": 0.0}
    for row in ids:
        row = row[None]
        model.zero_grad()
        model(input_ids=row, labels=row).loss.mul(row.numel()).backward()
        x, y = seen["down"]
        d = (x - mean_mlp)[0]                                  # (tokens, channels)
        g = y.grad[0]
        for j in range(down.in_features):
            total["channels"][j] += ((g @ down.weight[:, j]) * d[:, j]).pow(2).sum() / 2
        z, yo = seen["o"]
        dz = (z - mean_o)[0]
        go = yo.grad[0]
        width = o.in_features // groups
        for k in range(groups):
            cols = slice(k * width, (k + 1) * width)
            total["groups"][k] += (dz[:, cols] * (go @ o.weight[:, cols])).sum(-1).pow(2).sum() / 2
        for kind in ("mlp", "attention"):
            out = seen[kind][1]
            total[kind] += float((out.grad[0] * out[0].detach()).sum(-1).pow(2).sum()) / 2
    for h in hs:
        h.remove()
    return total


def test_fisher_scores_are_the_second_order_loss_terms_written_out():
    model = tiny_model("llama", num_hidden_layers=2)
    adapter = get_adapter(model)
    ids = _ids(3, 16)
    scores = ss.measure(model, adapter, ids, torch.device("cpu"), True)
    ss.fisher(model, adapter, ids, torch.device("cpu"), scores, True, batch_size=2)
    assert all(p.requires_grad for p in model.parameters())  # the flags as they were
    m = scores[1]
    groups = m.groups.numel()
    assert groups > 1
    want = _brute_fisher(model, 1, ids, scores[1].mlp_mean, scores[1].o_mean, groups)
    torch.testing.assert_close(m.channels, want["channels"], rtol=1e-3, atol=1e-9)
    torch.testing.assert_close(m.groups, want["groups"], rtol=1e-3, atol=1e-9)
    assert m.mlp == pytest.approx(want["mlp"], rel=1e-3) and m.attention == pytest.approx(want["attention"], rel=1e-3)


@pytest.mark.parametrize("arch", sorted(a for a in TINY if a not in ("mixtral", "qwen2_moe")))
def test_fisher_search_respects_the_budget_on_every_dense_architecture(arch):
    model = tiny_model(arch)
    adapter = get_adapter(model)
    before = _block_params(model)
    scores = ss.measure(model, adapter, _ids(2), torch.device("cpu"), True)
    ss.fisher(model, adapter, _ids(2), torch.device("cpu"), scores, True)
    # removing a whole MLP costs the same order as removing all its channels one by one (with Gemma-2's
    # sandwich norms too, where it is scored after the norm: before it the linearisation sees ~2% of it)
    assert all(m.mlp > 0.1 * float(m.channels.sum()) and m.attention > 0 for m in scores.values())
    step = StructuredSearch(budget=0.3, rounds=2, channel_group=8, nsamples=4, score="fisher")
    out = ss.run_structured_search(model, adapter, step, _ids(), progress=False)
    assert 0 < out.params_removed <= 0.3 * before


def test_fisher_rejects_unknown_scores():
    with pytest.raises(SparsekitError, match="score must be energy or fisher"):
        StructuredSearch(budget=0.1, score="taylor")


def test_energy_scores_see_what_a_sandwich_norm_hands_to_the_residual():
    """Gemma-2: a sublayer's score is the energy of its post-norm's output (what the residual stream gets),
    and its channels are scaled by that norm's average gain, so channels and whole sublayers stay on one
    scale (the wiring of that approximation: every term measured by hooks of its own here)."""
    model = tiny_model("gemma2", num_hidden_layers=2)
    adapter = get_adapter(model)
    norms = adapter.norms(1)
    with torch.no_grad():  # a post-norm gain far from 1, as trained Gemma-2 models have
        norms["post_feedforward_layernorm"].weight.fill_(3.0)
    down = adapter.linears(1)[ss._role_rel(adapter, 1, "down")]
    ids = _ids(2, 16)
    seen = {}

    def keep(name):
        def hook(_m, _a, out):
            y = out[0] if isinstance(out, tuple) else out
            seen[name] = seen.get(name, 0.0) + float(y.float().pow(2).sum())
        return hook
    hs = [norms["post_feedforward_layernorm"].register_forward_hook(keep("post")),
          adapter.mlp(1).register_forward_hook(keep("mlp")), adapter.blocks[1].register_forward_hook(keep("block")),
          down.register_forward_hook(lambda _m, args, _o: seen.__setitem__("down_in", args[0].detach()))]
    with torch.no_grad():
        model(input_ids=ids)
    for h in hs:
        h.remove()
    m = ss.measure(model, adapter, ids, torch.device("cpu"), False)[1]
    gain = seen["post"] / seen["mlp"]
    assert gain > 2  # what the sublayer's own output misses
    assert m.mlp == pytest.approx(seen["post"] / seen["block"], rel=1e-4)
    # channel j without compensation: ||W_down[:, j]||^2 E[x_j^2] * tokens, on the post-norm's scale
    x = seen["down_in"].float().reshape(-1, down.in_features)
    want = down.weight.float().pow(2).sum(0) * x.pow(2).sum(0) * gain / seen["block"]
    torch.testing.assert_close(m.channels, want, rtol=1e-4, atol=1e-12)
