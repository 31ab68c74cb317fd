"""Recipes: typed steps, YAML round trip, built-in names, one clear error per bad recipe."""

import pytest

from sparsekit.errors import SparsekitError
from sparsekit.recipe import Prune, Recipe, builtin_recipes, load_recipe


def test_yaml_round_trip():
    text = """
- prune: {method: sparsegpt, sparsity: 0.6, allocation: search, search: {ratios: [0.9, 0.5], nsamples: 4}}
- prune: {method: wanda, pattern: "2:4", targets: ["*.mlp.*"], exclude: ["model.layers.0.*"]}
"""
    recipe = Recipe.from_yaml(text)
    assert [type(s) for s in recipe.steps] == [Prune, Prune]
    assert recipe.steps[0].search.ratios == (0.5, 0.9)
    assert recipe.steps[1].sparsity == 0.5 and recipe.steps[1].pattern == "2:4"
    again = Recipe.from_yaml(recipe.to_yaml())
    assert again == recipe and again.to_list() == recipe.to_list()


def test_builtins_load_and_describe():
    expected = {  # one of each family
        "magnitude-70": "magnitude 70% unstructured (uniform)",
        "wanda-4:8": "wanda 4:8 (uniform)",
        "sparsegpt-2:4": "sparsegpt 2:4 (uniform)",
        "sparsegpt-60-search": "sparsegpt 60% unstructured (search)",
        "int8-rtn": "int8 per-channel rtn",
        "int3-gptq": "int3 g128 gptq",
        "mxfp6-rtn": "mxfp6_e2m3 g32 rtn",
        "ternary-gptq": "ternary per-tensor gptq",
        "sparsegpt-4:8+int4-gptq": "sparsegpt 4:8 (uniform) + int4 g128 gptq",
        "sparsegpt-2:4+int4-joint": "sparsegpt 2:4 (uniform) + int4 g128 gptq (joint)",
    }
    assert {name: load_recipe(name).describe() for name in expected} == expected
    # Every built-in loads, and no two share a description: one that dropped a setting (sparsity,
    # allocation, format, method, joint) would make two of them collide.
    described = [load_recipe(name).describe() for name in builtin_recipes()]
    assert len(set(described)) == len(described)


def test_recipe_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("- prune: {method: magnitude, sparsity: 0.3, allocation: global}\n")
    assert load_recipe(str(path)).steps[0].allocation == "global"


@pytest.mark.parametrize("data, message", [
    ([{"prune": {"method": "obs"}}], "method 'obs' is not one of magnitude, wanda, ria, sparsegpt"),
    ([{"prune": {"sparsty": 0.5}}], r"unknown option\(s\) 'sparsty'"),
    ([{"prune": {"sparsity": 1.0}}], r"sparsity must be in \[0, 1\)"),
    ([{"prune": {"sparsity": "half"}}], "sparsity must be a number"),
    ([{"prune": {"pattern": "4:2"}}], "0 < N < M"),
    ([{"prune": {"pattern": "2:4", "allocation": "owl"}}], "needs an unstructured pattern"),
    ([{"prune": {"method": "wanda", "allocation": "global"}}], "only magnitude"),
    ([{"prune": {"allocation": "per_type"}}], "needs ratios"),
    ([{"prune": {"allocation": "per_type", "ratios": {"q": 2}}}], r"ratios.q must be in \[0, 1\]"),
    ([{"prune": {"ratios": {"q": 0.5}}}], "only read by allocation 'per_type'"),
    ([{"prune": {"allocation": "search", "sparsity": 0.95}}], "above the largest search ratio"),
    ([{"prune": {"owl": {"M": 5}}}], "prune.owl: unknown option"),
    ([{"prune": {"targets": []}}], "nothing would be pruned"),
    ([{"quantise": {}}], "unknown step 'quantise'"),
    ([], "non-empty list of steps"),
    ("wanda-51", "neither a YAML file nor a built-in recipe"),
    ("- prune: {method: [", "not valid YAML"),
    ("missing.yaml", "does not exist"),
])
def test_bad_recipes_give_one_clear_line(data, message):
    with pytest.raises(SparsekitError, match=message) as info:
        load_recipe(data)
    assert "\n" not in str(info.value)


def test_every_step_type_has_a_handler():
    from sparsekit.errors import SparsekitError
    from sparsekit.recipe import STEPS
    from sparsekit.steps.run import HANDLERS, StepState, run_steps

    from sparsekit.steps.run import PruneQuantizeJoint

    assert set(HANDLERS) == set(STEPS.values()) | {PruneQuantizeJoint}  # (+ the paired joint unit)

    class Unknown:
        pass

    with pytest.raises(SparsekitError, match="has no handler"):
        run_steps([Unknown()], StepState(None, None, None, None))


def test_gptq_defaults_to_act_order_except_joint_and_rtn():
    from sparsekit.recipe import Quantize

    assert Quantize(method="gptq").act_order is True
    assert Quantize(method="gptq", joint=True).act_order is False
    assert Quantize(method="rtn").act_order is False
    assert Quantize(method="gptq", act_order=False).act_order is False
    recipe = Recipe.from_list([{"quantize": {"format": "int4", "method": "gptq"}}])
    assert Recipe.from_yaml(recipe.to_yaml()).steps[0].act_order is True


def test_dsnot_and_reconstruct_options_round_trip_and_refusals():
    text = """
- prune: {method: ria, pattern: "2:4", dsnot: true, reconstruct: {epochs: 3, lr: 0.0002}}
- prune: {method: sparsegpt, pattern: "2:4", reconstruct: true, dsnot: null}
"""
    recipe = Recipe.from_yaml(text)
    a, b = recipe.steps
    assert a.dsnot.max_cycles == 50 and a.reconstruct.epochs == 3 and a.reconstruct.lr == 0.0002
    assert b.dsnot is None and b.reconstruct.epochs == 4 and b.reconstruct.nsamples == 32
    assert Recipe.from_yaml(recipe.to_yaml()) == recipe
    with pytest.raises(SparsekitError, match="dsnot refines .* use method: wanda or ria"):
        Prune(method="sparsegpt", pattern="2:4", dsnot=True)
    with pytest.raises(SparsekitError, match="reconstruct fits each block .* use method: wanda, ria or sparsegpt"):
        Prune(method="magnitude", reconstruct=True)
    with pytest.raises(SparsekitError, match="dsnot.max_cycles must be an integer >= 1"):
        Prune(method="wanda", dsnot={"max_cycles": 0})
    with pytest.raises(SparsekitError, match="reconstruct.lr must be > 0"):
        Prune(method="wanda", reconstruct={"lr": 0})
    with pytest.raises(SparsekitError, match="reconstruct.schedule must be one of constant, linear, got 'cosine'"):
        Prune(method="wanda", reconstruct={"schedule": "cosine"})
    with pytest.raises(SparsekitError, match=r"prune.reconstruct: unknown option\(s\) 'steps'"):
        Prune(method="wanda", reconstruct={"steps": 3})
