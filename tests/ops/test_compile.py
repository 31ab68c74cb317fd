"""Converted models trace as one graph: `sparsekit::packed_linear` is a torch custom op with a fake
implementation, so `torch.compile(fullgraph=True)` (no graph break allowed) and `torch.export` see one
opaque node per packed projection and compute what eager mode computes."""

import pytest
import torch

from sparsekit.api import convert
from tests.tiny import tiny_model

# data-free recipes: one per built-in layout
RECIPES = {
    "semi24": [{"prune": {"method": "magnitude", "pattern": "2:4"}}],
    "int4": [{"quantize": {"format": "int4", "group_size": 32}}],
    "int4_semi24": [{"prune": {"method": "magnitude", "pattern": "2:4"}},
                    {"quantize": {"format": "int4", "group_size": 32}}],
    "mxfp4": [{"quantize": {"format": "mxfp4"}}],
}


def _converted(kind: str, **overrides) -> torch.nn.Module:
    result = convert(tiny_model("llama", seed=1, **overrides), RECIPES[kind], progress=False)
    assert set(result.packed.values()) == {kind}
    return result.model


def _ids() -> torch.Tensor:
    return torch.randint(3, 300, (2, 24), generator=torch.Generator().manual_seed(5))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("kind", sorted(RECIPES))
@torch.no_grad()
def test_fullgraph_compile_matches_eager(kind):
    """aot_eager runs the fake implementation through AOTAutograd (what inductor traces) without code
    generation, so every layout is covered in seconds; fullgraph=True turns any graph break into an error."""
    model = _converted(kind)
    eager = model(_ids(), use_cache=False).logits
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    assert _rel(compiled(_ids(), use_cache=False).logits, eager) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(RECIPES))
@torch.no_grad()
def test_inductor_compile_matches_eager(kind):
    """The default backend (code generation around the opaque op), one block to keep it to seconds."""
    model = _converted(kind, num_hidden_layers=1)
    eager = model(_ids(), use_cache=False).logits
    compiled = torch.compile(model, fullgraph=True)
    assert _rel(compiled(_ids(), use_cache=False).logits, eager) < 1e-4


@pytest.mark.parametrize("kind", sorted(RECIPES))
@torch.no_grad()
def test_export_keeps_one_packed_node_per_projection(kind):
    model = _converted(kind)
    program = torch.export.export(model, (_ids(),), kwargs={"use_cache": False})
    nodes = [n for n in program.graph.nodes if n.op == "call_function"
             and n.target == torch.ops.sparsekit.packed_linear.default]
    assert len(nodes) == 21  # 3 blocks x 7 projections
    eager = model(_ids(), use_cache=False).logits
    assert torch.equal(program.module()(_ids(), use_cache=False).logits, eager)


def test_gradients_flow_to_the_inputs_compiled_and_eager():
    """Gradients on (the default): d loss / d input embeddings through packed projections equal those of
    the same model with dense nn.Linear weights (the dequantized ones), compiled or not."""
    from sparsekit.nn import PackedLinear

    model = _converted("int4_semi24", num_hidden_layers=1)
    dense = tiny_model("llama", seed=1, num_hidden_layers=1)
    dense.load_state_dict({k: v for k, v in model.state_dict().items() if k in dense.state_dict()}, strict=False)
    for name, module in model.named_modules():
        if isinstance(module, PackedLinear):
            dense.get_submodule(name).weight.data.copy_(module.dequantized_weight())
    embed = model.get_input_embeddings()

    def grad_of(fn):
        e = embed(_ids()).detach().requires_grad_()
        fn(inputs_embeds=e, use_cache=False).logits.square().sum().backward()
        return e.grad

    want = grad_of(dense)
    assert _rel(grad_of(model), want) < 1e-4
    assert _rel(grad_of(torch.compile(model, fullgraph=True, backend="aot_eager")), want) < 1e-4
