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
@torch.no_grad()
def test_inductor_compile_matches_eager():
    model = _converted("int4_semi24", num_hidden_layers=1)
    eager = model(_ids(), use_cache=False).logits
    compiled = torch.compile(model, fullgraph=True)
    assert _rel(compiled(_ids(), use_cache=False).logits, eager) < 1e-4


@torch.no_grad()
def test_export_keeps_one_packed_node_per_projection():
    model = _converted("int4")
    program = torch.export.export(model, (_ids(),), kwargs={"use_cache": False})
    nodes = [n for n in program.graph.nodes if n.op == "call_function"
             and n.target == torch.ops.sparsekit.packed_linear.default]
    assert len(nodes) == 21  # 3 blocks x 7 projections
    eager = model(_ids(), use_cache=False).logits
    assert torch.equal(program.module()(_ids(), use_cache=False).logits, eager)
