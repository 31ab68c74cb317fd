"""Running prune steps over tiny models of every architecture: targets, allocations, sequential mode."""

import pytest
import torch

from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import get_adapter
from sparsekit.prune.patterns import is_nm
from sparsekit.recipe import Prune
from sparsekit.steps.prune import run_prune
from sparsekit.steps.targets import select_targets
from tests.tiny import TINY, tiny_model


def _ids(n=4, seqlen=32, vocab=300, seed=0):
    return torch.randint(3, vocab, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch", sorted(TINY))
@pytest.mark.parametrize("method", ["magnitude", "wanda", "ria", "sparsegpt"])
def test_every_method_on_every_architecture(arch, method):
    model = tiny_model(arch)
    adapter = get_adapter(model)
    result = run_prune(model, adapter, Prune(method=method, pattern="2:4"), _ids(), progress=False)
    assert len(result.masks) == len(select_targets(adapter, Prune())) == adapter.num_blocks * len(adapter.spec.projections)
    for t in result.targets:
        mask = result.masks[t.name]
        weight = adapter.linears(t.block)[t.rel].weight
        assert is_nm(mask, 2, 4)
        assert bool((weight[~mask] == 0).all())
        assert result.modules[t.name].sparsity == 0.5
    assert result.sparsity == 0.5
    with torch.no_grad():
        assert torch.isfinite(model(_ids(1)).logits).all()


def test_targets_and_exclude_leave_other_modules_untouched():
    model = tiny_model("llama")
    before = _weights(model)
    step = Prune(method="wanda", sparsity=0.5, targets=["*.mlp.*"], exclude=["model.layers.1.*"])
    result = run_prune(model, get_adapter(model), step, _ids(), progress=False)
    assert sorted(result.masks) == sorted(f"model.layers.{i}.mlp.{p}_proj" for i in (0, 2) for p in ("gate", "up", "down"))
    after = model.state_dict()
    for name, w in before.items():
        pruned = name.removesuffix(".weight") in result.masks
        assert torch.equal(w, after[name]) != pruned, name


def test_no_target_and_bad_shape_errors_change_nothing():
    model = tiny_model("llama")
    before = _weights(model)
    with pytest.raises(SparsekitError, match="match no module; module names look like 'model.layers.0.self_attn"):
        run_prune(model, get_adapter(model), Prune(targets=["*.fc1"]), _ids(), progress=False)
    with pytest.raises(SparsekitError, match="q_proj: in_features=64 is not a multiple of M=7"):
        run_prune(model, get_adapter(model), Prune(method="wanda", pattern="3:7"), _ids(), progress=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_per_type_ratios():
    model = tiny_model("llama")
    step = Prune(method="wanda", allocation="per_type", ratios={"attention": 0.25, "down": 0.75}, sparsity=0.5)
    result = run_prune(model, get_adapter(model), step, _ids(), progress=False)
    expected = {"q": 0.25, "k": 0.25, "v": 0.25, "o": 0.25, "gate": 0.5, "up": 0.5, "down": 0.75}
    for t in result.targets:
        assert result.modules[t.name].sparsity == expected[t.role]


def test_global_magnitude_uses_one_threshold():
    model = tiny_model("llama")
    weights = {n: m.weight.detach().clone() for n, m in model.named_modules() if n.endswith("_proj")}
    result = run_prune(model, get_adapter(model), Prune(method="magnitude", sparsity=0.6, allocation="global"),
                       None, progress=False)
    kept = torch.cat([weights[n][m].abs() for n, m in result.masks.items()])
    dropped = torch.cat([weights[n][~m].abs() for n, m in result.masks.items()])
    assert float(dropped.max()) <= float(kept.min())
    assert result.sparsity == pytest.approx(0.6, abs=1 / kept.numel())
    assert len({round(v.sparsity, 3) for v in result.modules.values()}) > 1  # not uniform


def test_owl_block_ratios_average_to_the_target():
    model = tiny_model("llama")
    step = Prune(method="wanda", sparsity=0.6, allocation="owl", owl={"threshold": 2.0, "spread": 0.1})
    result = run_prune(model, get_adapter(model), step, _ids(), progress=False)
    blocks = result.allocation_info["block_sparsity"]
    assert sum(blocks.values()) / len(blocks) == pytest.approx(0.6)
    assert max(blocks.values()) - min(blocks.values()) == pytest.approx(0.2)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "magnitude"])
def test_search_meets_the_budget_and_varies_ratios(method):
    model = tiny_model("llama")
    adapter = get_adapter(model)
    step = Prune(method=method, sparsity=0.6, allocation="search", search={"ratios": [0.4, 0.6, 0.8], "nsamples": 2})
    result = run_prune(model, adapter, step, _ids(), progress=False)
    info = result.allocation_info
    sizes = {t.name: result.masks[t.name].numel() for t in result.targets}
    removed = sum(int((~m).sum()) for m in result.masks.values())
    granularity = max(m.shape[0] for m in result.masks.values()) if method == "wanda" else 1
    assert info["budget"] - granularity < removed <= info["budget"] == round(0.6 * sum(sizes.values()))
    ratios = [v.sparsity for v in result.modules.values()]
    assert all(0.0 <= r <= 0.8 + 1e-9 for r in ratios) and len(set(ratios)) > 1
    assert set(info["block_kl"]) == {"0", "1", "2"} and all(v >= 0 for v in info["block_kl"].values())


def test_search_leaves_the_model_dense_until_the_final_pass():
    model = tiny_model("llama")
    adapter = get_adapter(model)
    from sparsekit.steps.sensitivity import measure_costs

    before = _weights(model)
    step = Prune(method="sparsegpt", sparsity=0.5, allocation="search", search={"ratios": [0.5, 0.9], "nsamples": 2})
    curves, _ = measure_costs(model, adapter, step, select_targets(adapter, step), _ids(2), torch.device("cpu"),
                              progress=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(c.costs[0] <= c.costs[1] + 1e-6 for c in curves.values())  # 90% costs more than 50%


def test_sequential_calibrates_on_pruned_outputs():
    ids = _ids()
    a, b = tiny_model("llama"), tiny_model("llama")
    run_prune(a, get_adapter(a), Prune(method="sparsegpt", sparsity=0.6), ids, progress=False)
    run_prune(b, get_adapter(b), Prune(method="sparsegpt", sparsity=0.6, sequential=False), ids, progress=False)
    wa, wb = a.model.layers[0].mlp.down_proj.weight, b.model.layers[0].mlp.down_proj.weight
    assert torch.equal(wa, wb)  # block 0 sees the same inputs either way
    assert not torch.equal(a.model.layers[2].mlp.down_proj.weight, b.model.layers[2].mlp.down_proj.weight)


def test_data_methods_need_calibration_ids():
    model = tiny_model("llama")
    with pytest.raises(SparsekitError, match="needs calibration data"):
        run_prune(model, get_adapter(model), Prune(method="wanda"), None, progress=False)


def test_ria_dsnot_reconstruct_step_records_and_keeps_patterns():
    model = tiny_model("llama")
    adapter = get_adapter(model)
    step = Prune(method="ria", pattern="2:4", dsnot=True, reconstruct={"epochs": 2, "lr": 1e-3})
    result = run_prune(model, adapter, step, _ids(), progress=False)
    record = result.record()
    assert sorted(record.reconstruction, key=int) == [str(i) for i in range(adapter.num_blocks)]
    assert all(after <= before for before, after in record.reconstruction.values())
    for t in result.targets:
        weight = adapter.linears(t.block)[t.rel].weight
        assert is_nm(result.masks[t.name], 2, 4)
        assert bool((weight[~result.masks[t.name]] == 0).all())
    again = type(record).from_dict(record.to_dict())
    assert again.reconstruction == record.reconstruction


def test_reconstruct_refused_inside_a_joint_sweep():
    from sparsekit.recipe import Quantize
    from sparsekit.steps.prune import run_prune_quantize

    model = tiny_model("llama")
    with pytest.raises(SparsekitError, match="reconstruct refits the kept weights"):
        run_prune_quantize(model, get_adapter(model), Prune(method="sparsegpt", pattern="2:4", reconstruct=True),
                           Quantize(method="gptq", format="int4", group_size=32, joint=True), _ids(), progress=False)


def test_reconstruct_to_the_model_target():
    model = tiny_model("llama")
    step = Prune(method="wanda", pattern="2:4", reconstruct={"epochs": 2, "lr": 1e-3, "target": "model"})
    record = run_prune(model, get_adapter(model), step, _ids(), progress=False).record()
    assert all(after <= before for before, after in record.reconstruction.values())
    with pytest.raises(SparsekitError, match="reconstruct.target must be 'block' or 'model'"):
        Prune(method="wanda", reconstruct={"target": "layer"})
