import pytest
import torch.nn as nn

from sparsekit.errors import UnsupportedArchitectureError
from sparsekit.models import ARCHITECTURES, ArchSpec, get_adapter, register_architecture
from sparsekit.models.adapters import ROLE_GROUP
from tests.tiny import EXPECTED_ROLES, TINY, tiny_model


def _expected(arch: str) -> dict:
    return EXPECTED_ROLES.get(arch, EXPECTED_ROLES["dense"])


@pytest.mark.parametrize("arch", sorted(TINY))
def test_adapter_finds_every_projection(arch):
    model = tiny_model(arch)
    adapter = get_adapter(model)
    assert adapter.spec.name == arch
    assert adapter.num_blocks == 3 and adapter.blocks is model.model.layers
    assert adapter.embed_tokens is model.model.embed_tokens
    assert adapter.final_norm is model.model.norm
    assert adapter.lm_head is model.lm_head
    for i in range(adapter.num_blocks):
        block = model.model.layers[i]
        linears = adapter.linears(i)
        roles = {adapter.role(name): tuple(lin.weight.shape) for name, lin in linears.items()}
        assert roles == _expected(arch)
        for name, lin in linears.items():
            # the adapter returns the block's own module objects, not copies
            assert lin is block.get_submodule(name)
            assert adapter.group(name) == ROLE_GROUP[adapter.role(name)]
        assert adapter.attention(i) is block.self_attn
        assert adapter.mlp(i) is block.mlp
        assert all(isinstance(n, nn.Module) for n in adapter.norms(i).values())


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe"])
def test_moe_router_and_experts(arch):
    model = tiny_model(arch)
    adapter = get_adapter(model)
    for i in range(adapter.num_blocks):
        router, experts = adapter.router(i), adapter.experts(i)
        assert router is model.model.layers[i].mlp.gate
        assert experts is model.model.layers[i].mlp.experts
        assert router.weight.shape == (4, 64)  # one row per expert
    if arch == "qwen2_moe":
        assert adapter.shared_expert(0) is model.model.layers[0].mlp.shared_expert
    else:
        assert adapter.shared_expert(0) is None


def test_dense_models_have_no_router():
    adapter = get_adapter(tiny_model("llama"))
    assert adapter.router(0) is None and adapter.experts(0) is None


def test_unknown_model_type_with_known_layout_is_inferred():
    model = tiny_model("llama")
    model.config.model_type = "my_llama_clone"
    assert get_adapter(model).spec.name == "llama"


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = type("Cfg", (), {"model_type": "toy"})()
        self.transformer = nn.ModuleDict({"h": nn.ModuleList([nn.Linear(4, 4)])})


def test_unknown_architecture_error_names_what_is_needed():
    with pytest.raises(UnsupportedArchitectureError) as info:
        get_adapter(_Toy())
    msg = str(info.value)
    assert "'toy'" in msg and "_Toy" in msg
    for needed in ("decoder blocks", "model.layers", "attention projections", "MLP projections",
                   "register_architecture"):
        assert needed in msg
    assert "\n" not in msg


def test_register_architecture_for_a_new_layout():
    model = tiny_model("llama")
    model.config.model_type = "renamed"
    spec = ArchSpec("renamed", projections={"self_attn.q_proj": "q", "mlp.down_proj": "down"})
    register_architecture("renamed", spec)
    try:
        adapter = get_adapter(model)
        assert adapter.spec is spec and set(adapter.linears(0)) == {"self_attn.q_proj", "mlp.down_proj"}
        with pytest.raises(ValueError, match="already registered"):
            register_architecture("renamed", spec)
    finally:
        ARCHITECTURES.pop("renamed")


def test_spec_mismatch_lists_missing_paths():
    model = tiny_model("phi3")
    model.config.model_type = "llama"  # claims llama, but projections are fused
    with pytest.raises(UnsupportedArchitectureError, match=r"missing block\.self_attn\.q_proj"):
        get_adapter(model)


def test_spec_rejects_unknown_roles():
    with pytest.raises(ValueError, match="unknown projection roles"):
        ArchSpec("bad", projections={"self_attn.q_proj": "query"})


def test_multimodal_wrapper_path_is_found():
    """The same text stack nested as model.language_model (multimodal wrappers) resolves too."""
    inner = tiny_model("llama")

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = inner.config
            self.model = nn.Module()
            self.model.language_model = inner.model
            self.lm_head = inner.lm_head

    adapter = get_adapter(Wrapper())
    assert adapter.blocks_path == "model.language_model.layers"
    assert adapter.blocks is inner.model.layers
