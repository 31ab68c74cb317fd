"""Typed step records (stored shape unchanged), the joint SparseGPT + GPTQ unit, and trait-driven validation."""

import dataclasses
import io
import json
from types import SimpleNamespace

import pytest
import torch

from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import get_adapter
from sparsekit.recipe import DropBlocks, Prune, Quantize, Recipe
from sparsekit.steps.records import (DropBlocksRecord, DropSublayersRecord, PrunedModule, PruneRecord,
                                     QuantizedModule, QuantizeRecord, StepRecord, WidthRecord, records_from_dicts)
from sparsekit.steps.run import PruneQuantizeJoint, StepState, plan_steps, run_steps
from tests.tiny import tiny_model

Q = "model.layers.0.self_attn.q_proj"
EXPERT = "model.layers.0.mlp.experts.gate_up_proj"

#: Step dicts exactly as checkpoints have stored them (the handlers' dicts before records were typed).
STORED = [
    {"step": "drop_blocks", "seconds": 1.5, "method": "bi", "removed": [2], "kept": [0, 1, 3], "params_removed": 100,
     "scores": {"bi": [0.1, 0.2, 0.05, 0.3]}, "modules": {}},
    {"step": "drop_sublayers", "seconds": 2.0, "removed": [[1, "mlp"], [3, "attention"]], "params_removed": 50,
     "scores": {"base_loss": 3.25, "nri": {"0:mlp": 0.1, "1:mlp": 0.01}}, "modules": {}},
    {"step": "prune_heads", "seconds": 0.5, "params_removed": 10, "kept": {"0": 1, "2": 1}, "modules": {}},
    {"step": "prune_experts", "seconds": 0.25, "params_removed": 7, "kept": {"0": 3}, "modules": {}},
    {"step": "prune", "seconds": 3.0, "sparsity": 0.5,
     "modules": {Q: {"role": "q", "shape": [64, 64], "target": 0.5, "sparsity": 0.5, "pattern": "2:4"},
                 EXPERT: {"role": "expert", "shape": [4, 192, 64], "target": 0.5, "sparsity": 0.5}},
     "allocation": {"outlier_ratio": {"0": 0.01}, "block_sparsity": {"0": 0.5}}},
    {"step": "quantize", "seconds": 0.0, "joint_with_previous": True,
     "modules": {Q: {"role": "q", "shape": [64, 64], "format": "int4", "group_size": 32, "method": "gptq",
                     "format_bits_per_weight": 4.5, "element_bits": 4}}},
    {"step": "quantize", "seconds": 1.25,
     "modules": {Q: {"role": "q", "shape": [64, 64], "format": "mxfp4", "group_size": 32, "method": "rtn",
                     "format_bits_per_weight": 4.25, "element_bits": 4}}},
]


def _ids(n=4, seqlen=32, vocab=300, seed=0):
    return torch.randint(3, vocab, (n, seqlen), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("stored", STORED, ids=[d["step"] for d in STORED])
def test_stored_step_dicts_round_trip_exactly(stored):
    record = StepRecord.from_dict(json.loads(json.dumps(stored)))
    assert record.step == stored["step"]
    assert json.dumps(record.to_dict()) == json.dumps(stored)  # same keys, same order, same values
    assert StepRecord.from_dict(record.to_dict()) == record


def test_records_are_typed():
    drop, sub, heads, _, prune, joint, rtn = records_from_dicts(STORED)
    assert isinstance(drop, DropBlocksRecord) and drop.removed == [2] and drop.scores["bi"][2] == 0.05
    assert isinstance(sub, DropSublayersRecord) and sub.removed == [(1, "mlp"), (3, "attention")]
    assert isinstance(heads, WidthRecord) and heads.kept == {"0": 1, "2": 1} and heads.modules == {}
    assert isinstance(prune, PruneRecord) and prune.modules[Q] == PrunedModule("q", (64, 64), 0.5, 0.5, "2:4")
    assert prune.modules[EXPERT].pattern is None  # stored without one
    assert isinstance(joint, QuantizeRecord) and joint.joint_with_previous and not rtn.joint_with_previous
    assert rtn.modules[Q] == QuantizedModule("q", (64, 64), "mxfp4", 32, "rtn", 4.25, 4)
    assert rtn.modules[Q].scale_bits_per_weight == 0.25
    assert records_from_dicts([prune])[0] is prune
    with pytest.raises(SparsekitError, match="step record 'prune_rows' is not one of"):
        StepRecord.from_dict({"step": "prune_rows"})
    with pytest.raises(SparsekitError, match="is not a QuantizeRecord"):
        QuantizeRecord.from_dict(STORED[4])


def test_plan_pairs_a_joint_quantize_step_with_its_prune_step():
    drop = DropBlocks(method="last", n=1)
    prune = Prune(method="sparsegpt", pattern="2:4")
    joint = Quantize(format="int4", group_size=32, method="gptq", joint=True)
    alone = Quantize(format="int4", group_size=32, method="gptq")
    assert plan_steps([drop, prune, joint]) == [drop, PruneQuantizeJoint(prune, joint)]
    assert plan_steps([prune, alone]) == [prune, alone]
    with pytest.raises(SparsekitError, match="joint: true needs a prune step right before it"):
        plan_steps([joint])
    with pytest.raises(SparsekitError, match="joint: true needs a prune step right before it"):
        plan_steps([drop, joint])


def test_joint_unit_runs_one_sweep_and_records_both_steps():
    model = tiny_model("llama")
    adapter = get_adapter(model)
    prune = Prune(method="sparsegpt", pattern="2:4")
    joint = Quantize(format="int4", group_size=32, method="gptq", joint=True)
    state = run_steps([prune, joint], StepState(model, adapter, _ids(), torch.device("cpu"), progress=False))
    pruned, quantized = state.records
    assert isinstance(pruned, PruneRecord) and pruned.sparsity == 0.5
    assert isinstance(quantized, QuantizeRecord) and quantized.joint_with_previous and quantized.seconds == 0.0
    assert set(quantized.modules) == set(pruned.modules) == set(state.masks) == set(state.qtensors)
    assert all(m.pattern == "2:4" for m in pruned.modules.values())
    assert {(m.format, m.group_size, m.method, m.element_bits) for m in quantized.modules.values()} == \
        {("int4", 32, "gptq", 4)}
    for name, keep in state.masks.items():  # pruned weights are zero codes too
        assert bool((model.get_submodule(name).weight[~keep] == 0).all())


def test_run_prune_quantize_refuses_what_cannot_share_a_sweep():
    from sparsekit.steps.prune import run_prune_quantize

    model = tiny_model("llama")
    adapter = get_adapter(model)
    joint = Quantize(format="int4", group_size=32, method="gptq", joint=True)
    with pytest.raises(SparsekitError, match="column sweep of sparsegpt; the prune method is 'wanda'"):
        run_prune_quantize(model, adapter, Prune(method="wanda"), joint, _ids(), progress=False)
    with pytest.raises(SparsekitError, match="same targets/exclude"):
        run_prune_quantize(model, adapter, Prune(method="sparsegpt", targets=["*.mlp.*"]), joint, _ids(),
                           progress=False)
    with pytest.raises(SparsekitError, match="runs a quantize step with joint: true"):
        run_prune_quantize(model, adapter, Prune(method="sparsegpt"), Quantize(method="gptq"), _ids(), progress=False)


def test_validation_asks_the_method_traits(monkeypatch):
    from sparsekit.prune import methods
    from sparsekit.quant import formats

    with pytest.raises(SparsekitError, match="which only magnitude scores allow; use method: magnitude, or"):
        Prune(method="wanda", allocation="global")
    # give wanda comparable scores and the N:M selection away from magnitude: the checks follow the traits
    monkeypatch.setitem(methods.TRAITS, "wanda", dataclasses.replace(methods.TRAITS["wanda"], global_scores=True,
                                                                     joint_quantization=True))
    monkeypatch.setitem(methods.TRAITS, "magnitude", dataclasses.replace(methods.TRAITS["magnitude"], nm=False))
    assert Prune(method="wanda", allocation="global").allocation == "global"
    with pytest.raises(SparsekitError, match="which only magnitude or wanda scores allow; use method: magnitude or "
                                             "wanda, or allocation"):
        Prune(method="sparsegpt", allocation="global")
    with pytest.raises(SparsekitError, match="method 'magnitude' has no N:M selection; use method: wanda, ria or sparsegpt"):
        Prune(method="magnitude", pattern="2:4")
    joint = {"quantize": {"format": "int4", "method": "gptq", "joint": True}}
    assert Recipe.from_list([{"prune": {"method": "wanda"}}, joint]).steps[1].joint
    with pytest.raises(SparsekitError, match="needs a prune step with method wanda or sparsegpt right before it"):
        Recipe.from_list([{"prune": {"method": "magnitude"}}, joint])

    with pytest.raises(SparsekitError, match=r"method gptq does not drive 'splitquant-int4' \(its parts are chosen "
                                             "by k-means\\); use method: rtn"):
        Quantize(format="splitquant-int4", method="gptq")
    assert not Quantize(method="rtn").needs_data and Quantize(method="gptq").needs_data
    monkeypatch.setitem(formats.QUANT_METHOD_TRAITS, "rtn",
                        dataclasses.replace(formats.QUANT_METHOD_TRAITS["rtn"], act_order=True))
    assert Quantize(method="rtn").act_order is True  # the default follows the trait too


def test_needs_data_follows_traits_and_allocation():
    assert not Prune(method="magnitude").needs_data
    assert Prune(method="magnitude", allocation="search").needs_data
    assert Prune(method="wanda").needs_data and Prune(method="sparsegpt").needs_data


def test_storage_bits_reads_records_and_stored_dicts_alike_and_expert_masks_do_not_break_it():
    from sparsekit.api import storage_bits

    model = tiny_model("mixtral")
    adapter = get_adapter(model)
    state = run_steps([Prune(method="wanda", pattern="2:4", experts=True)],
                      StepState(model, adapter, _ids(), torch.device("cpu"), progress=False))
    (record,) = state.records
    assert record.modules[EXPERT].pattern is None and record.modules[Q].pattern == "2:4"
    bits = storage_bits(adapter, state.records, state.masks)
    assert bits == storage_bits(adapter, [r.to_dict() for r in state.records], state.masks)
    assert Q in bits and EXPERT not in bits  # fused expert weights stay dense: no packed layout


def test_checkpoint_stores_the_records_as_dicts_of_the_old_shape(tiny_dir, data_dir, tmp_path):
    from sparsekit.api import compress, save
    from sparsekit.checkpoint import read_metadata

    recipe = [{"drop_blocks": {"method": "last", "n": 1}}, {"prune": {"method": "sparsegpt", "pattern": "2:4"}},
              {"quantize": {"format": "int4", "group_size": 32, "method": "gptq", "joint": True}}]
    compressed = compress(str(tiny_dir), recipe, nsamples=4, seqlen=64, data_dir=data_dir, progress=False)
    assert [type(r) for r in compressed.steps] == [DropBlocksRecord, PruneRecord, QuantizeRecord]
    stored = read_metadata(save(compressed, tmp_path / "ckpt"))["steps"]
    assert [list(d) for d in stored] == [
        ["step", "seconds", "method", "removed", "kept", "params_removed", "scores", "modules"],
        ["step", "seconds", "sparsity", "modules", "allocation"],
        ["step", "seconds", "joint_with_previous", "modules"]]
    assert list(stored[1]["modules"][Q]) == ["role", "shape", "target", "sparsity", "pattern"]
    assert list(stored[2]["modules"][Q]) == ["role", "shape", "format", "group_size", "method",
                                             "format_bits_per_weight", "element_bits"]
    assert stored[0]["removed"] == [2] and len(stored[1]["modules"]) == 2 * 7
    assert records_from_dicts(stored) == compressed.steps


def test_cli_summary_reads_record_attributes():
    from sparsekit.cli import _print_compressed

    records = records_from_dicts(STORED)
    compressed = SimpleNamespace(recipe=SimpleNamespace(describe=lambda: "a recipe"), steps=records, sparsity=0.5,
                                 storage={Q: 3.5}, packed={})
    out = io.StringIO()
    _print_compressed(compressed, "DIR", out)
    lines = out.getvalue().splitlines()
    assert lines[1] == "step 1    drop_blocks (bi): removed blocks [2] (100 parameters) in 1.5 s"
    assert lines[2] == "step 2    drop_sublayers (NRI): removed [[1, 'mlp'], [3, 'attention']] (50 parameters) in 2.0 s"
    assert lines[3] == "step 3    prune_heads: kept widths [1] over 2 blocks (10 parameters removed) in 0.5 s"
    assert lines[5].startswith("step 5    prune: sparsity 0.5000 over 2 modules in 3.0 s  [q 0.500  expert 0.500]")
    assert lines[6] == "step 6    quantize: int4 (gptq, 4.500 bits) over 1 modules in the previous step's sweep"
    assert lines[7] == "step 7    quantize: mxfp4 (rtn, 4.250 bits) over 1 modules in 1.2 s"
    assert "packed    3.500 bits per projection weight" in out.getvalue()
