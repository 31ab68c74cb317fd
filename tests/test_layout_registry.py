"""Adding a layout is one class plus one kernel registration per backend (docs/ARCHITECTURE.md).

The toy layout below lives in this file only: an int8 per-channel layout, given a priority above the
built-in one. Defining the class registers it, one decorator registers its kernel, and then `convert` picks
it, the model runs on its kernel, saves and loads, and `auto` dispatch explains its choices.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

import sparsekit
from sparsekit.api import convert
from sparsekit.nn import PackedLinear
from sparsekit.ops.packed_linear import explain, packed_linear, select_kernel
from sparsekit.pack import LAYOUTS, CompressedWeight, Layout
from tests.tiny import tiny_model


@pytest.fixture
def toy():
    """Define (= register) the toy layout and its kernel; unregister afterwards so other tests see the
    built-in layouts only."""
    calls = []

    @dataclass
    class ToyInt8(Layout):
        KIND: ClassVar[str] = "toy_int8"
        PRIORITY: ClassVar[int] = 100  # above the built-in int8 layout, which handles the same codes
        codes: torch.Tensor   # [N, K] int8
        scales: torch.Tensor  # [N] fp32, one per output channel

        @classmethod
        def handles(cls, c: CompressedWeight) -> bool:
            return c.q is not None and c.q.format == "int8"

        @classmethod
        def unfit(cls, c: CompressedWeight) -> str | None:
            return None if c.q.group_size == 0 else "the toy layout takes per-channel int8 only"

        @classmethod
        def from_compressed(cls, c: CompressedWeight, dtype=None) -> "ToyInt8":
            return cls(c.shape, c.q.codes.to(torch.int8).contiguous(), c.q.scales.reshape(-1).float())

        def unpack(self) -> torch.Tensor:
            return self.codes.float() * self.scales[:, None]

    # its one kernel: integer codes times activations, scales applied once per output (not per weight).
    # Registered as the 'triton' backend because that comes before the reference in `auto` order; it
    # accepts CPU tensors so that this test can see `auto` choose it.
    @ToyInt8.register_kernel("triton", supports=lambda x, layout: None if x.dtype == torch.float32
                             else "the toy kernel takes float32 activations")
    def toy_kernel(x, layout, bias=None):
        calls.append(tuple(x.shape))
        out = (x @ layout.codes.float().T) * layout.scales
        return out if bias is None else out + bias

    yield ToyInt8, calls
    LAYOUTS.pop("toy_int8")


def test_a_layout_defined_in_a_test_converts_runs_saves_and_loads(toy, tmp_path):
    cls, calls = toy
    recipe = [{"quantize": {"format": "int8", "group_size": 0, "targets": ["*.mlp.*"]}}]
    model = tiny_model("llama", seed=3)
    simulated = sparsekit.compress(tiny_model("llama", seed=3), recipe, progress=False).model
    result = convert(model, recipe, progress=False)
    assert set(result.packed.values()) == {"toy_int8"} and len(result.packed) == 9
    module = result.model.get_submodule("model.layers.0.mlp.up_proj")
    assert type(module) is PackedLinear and module.kind == "toy_int8"
    ids = torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = simulated(ids).logits
        got = result.model(ids).logits
    assert len(calls) == 9  # every packed projection ran the toy kernel once, not the reference
    assert float((got - want).norm() / want.norm()) < 1e-5
    from tests.tiny import tiny_tokenizer

    path = sparsekit.save(result.model, tmp_path / "toy", tokenizer=tiny_tokenizer())
    loaded, _ = sparsekit.load(path)
    assert loaded.get_submodule("model.layers.2.mlp.down_proj").kind == "toy_int8"
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, got)


def test_auto_takes_the_first_backend_that_supports_the_inputs_and_explains_the_rest(toy):
    cls, calls = toy
    layout = cls((3, 4), torch.tensor([[1, -2, 3, 0]] * 3, dtype=torch.int8), torch.tensor([1.0, 0.5, 2.0]))
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert select_kernel(x, layout).backend == "triton"
    assert packed_linear(x, layout).tolist() == [[2.0, 1.0, 4.0]]
    half = x.half()
    assert select_kernel(half, layout).backend == "reference"  # the toy kernel refuses fp16
    assert explain(half, layout) == {"cuda": "the toy_int8 layout has no cuda kernel",
                                     "triton": "the toy kernel takes float32 activations",
                                     "cpu": "the toy_int8 layout has no cpu kernel", "reference": "ok"}
    with pytest.raises(ValueError, match="backend='triton' requested but the toy kernel takes float32"):
        packed_linear(half, layout, backend="triton")


def test_a_kind_is_registered_once(toy):
    with pytest.raises(sparsekit.SparsekitError, match="layout kind 'semi24' is taken"):
        @dataclass
        class Other(Layout):
            KIND: ClassVar[str] = "semi24"

            def unpack(self):
                raise NotImplementedError


def test_an_accelerator_tensor_on_the_reference_warns_once(caplog, monkeypatch):
    """Meta tensors stand in for a GPU here: any non-CPU tensor that falls back to the reference is slow."""
    from sparsekit.ops import packed_linear as op
    from sparsekit.pack import Int4
    from sparsekit.quant.formats import get_format

    monkeypatch.setattr(op, "_warned_fallback", False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    layout = Int4.pack(get_format("int4", 32, True).quantize(torch.randn(8, 64)))
    meta = Int4.from_tensors(layout.shape, {k: v.to("meta") for k, v in layout.tensors().items()}, layout.attrs())
    x = torch.empty(2, 64, device="meta")
    with caplog.at_level(logging.WARNING, logger="sparsekit.ops.packed_linear"):
        assert select_kernel(x, meta).backend == "reference"
        select_kernel(x, meta)
    warnings = [r for r in caplog.records if "runs the reference" in r.message]
    assert len(warnings) == 1 and "triton" in warnings[0].message


def test_no_switch_over_layouts_outside_pack():
    """The layouts own their dispatch: no isinstance test against a layout class and no comparison of a
    layout kind in the ops, kernels, modules or convert (docs/ARCHITECTURE.md §3)."""
    import re
    from pathlib import Path

    root = Path(sparsekit.__file__).parent
    files = [*(root / "ops").rglob("*.py"), *(root / "kernels").rglob("*.py"), *(root / "nn").rglob("*.py"),
             root / "steps" / "convert.py"]
    names = "|".join(sorted(cls.__name__ for cls in LAYOUTS.values()))
    kinds = "|".join(sorted(LAYOUTS))
    # (a type compared with a torch.nn class is not a layout switch: nn/dense.py swaps exact nn.Linear modules only)
    switch = re.compile(rf"isinstance\([^)]*\b({names})\b|\btype\([^)]*\)\s*(is|==|!=|in)\s(?!nn\.)"
                        rf"|\b(kind|KIND)\s*(==|!=|in)\s|[\"']({kinds})[\"']\s*(==|!=|in)\s")
    hits = [f"{f.relative_to(root)}:{i}" for f in files for i, line in enumerate(f.read_text().splitlines(), 1)
            if switch.search(line)]
    assert len(files) >= 8 and not hits, hits


def test_old_module_names_keep_their_calls():
    """`SparseLinear.from_linear(lin)` (a weight that is already 2:4), `mask=` and `qtensor=` keywords."""
    from sparsekit.nn import QuantLinear, SparseLinear
    from sparsekit.prune.patterns import nm_mask
    from sparsekit.quant.formats import get_format

    lin = torch.nn.Linear(64, 16)
    keep = nm_mask(lin.weight.detach().abs(), 2, 4)
    lin.weight.data.masked_fill_(~keep, 0)
    lin.weight.data[0, :4] = torch.tensor([0.0, 0.0, 0.5, 0.0])  # a kept weight that is exactly 0 still packs
    keep[0, :4] = torch.tensor([False, True, True, False])  # (whatever the random draw had kept there)
    by_default = SparseLinear.from_linear(lin)
    assert by_default.kind == "semi24" and torch.equal(by_default.dequantized_weight(), lin.weight.detach())
    assert torch.equal(SparseLinear.from_linear(lin, mask=keep).dequantized_weight(), lin.weight.detach())
    q = get_format("int4", 32, True).quantize(lin.weight.detach())
    assert QuantLinear.from_linear(lin, qtensor=q).kind == "int4"
    assert QuantLinear.from_linear(lin, q, keep).kind == QuantLinear.from_linear(lin, keep, q).kind == "int4_semi24"


def test_layout_subclasses_and_field_names(toy):
    """A subclass without a KIND of its own is no new layout; a field may not shadow the module's weight."""
    from sparsekit.pack import Semi24

    @dataclass
    class MySemi(Semi24):
        pass

    assert LAYOUTS["semi24"] is Semi24

    @dataclass
    class Clash(Layout):
        KIND: ClassVar[str] = "toy_clash"
        weight: torch.Tensor

        def unpack(self):
            return self.weight

    try:
        with pytest.raises(sparsekit.SparsekitError, match="clash with the module's own weight"):
            Clash.tensor_fields()
    finally:
        LAYOUTS.pop("toy_clash")


def test_from_tensors_refuses_a_missing_tensor_or_attribute():
    from sparsekit.pack import Int4
    from sparsekit.quant.formats import get_format

    layout = Int4.pack(get_format("int4", 32, True).quantize(torch.randn(8, 64)))
    tensors = layout.tensors()
    with pytest.raises(sparsekit.SparsekitError, match="needs scales"):
        Int4.from_tensors(layout.shape, {"codes": tensors["codes"], "zeros": tensors["scales"]}, layout.attrs())
    with pytest.raises(sparsekit.SparsekitError, match="needs group_size"):
        Int4.from_tensors(layout.shape, tensors, {"group_size": None})
