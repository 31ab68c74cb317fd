import pytest
import torch

from sparsekit.calib import CalibSettings, LayerwiseCalibrator
from sparsekit.errors import SparsekitError
from sparsekit.models import get_adapter
from tests.tiny import TINY, tiny_model


def _ids(n=3, seqlen=24, vocab=300, seed=0):
    return torch.randint(3, vocab, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def _full_forward_io(model, ids):
    """Per block: inputs and outputs of a plain full forward pass, and every projection's inputs."""
    adapter = get_adapter(model)
    block_in, block_out, lin_in = {}, {}, {}
    hooks = []
    for i, block in enumerate(adapter.blocks):
        hooks.append(block.register_forward_pre_hook(
            lambda m, a, kw, i=i: block_in.setdefault(i, []).append(a[0] if a else kw["hidden_states"]),
            with_kwargs=True))
        hooks.append(block.register_forward_hook(
            lambda m, a, out, i=i: block_out.setdefault(i, []).append(out[0] if isinstance(out, tuple) else out)))
        for name, lin in adapter.linears(i).items():
            hooks.append(lin.register_forward_pre_hook(
                lambda m, a, key=(i, name): lin_in.setdefault(key, []).append(a[0].reshape(-1, a[0].shape[-1]))))
    with torch.no_grad():
        model(ids, use_cache=False)
    for h in hooks:
        h.remove()
    return block_in, block_out, {k: torch.cat(v) for k, v in lin_in.items()}


@pytest.mark.parametrize("arch", sorted(TINY))
@pytest.mark.parametrize("rerun", [False, True], ids=["single-pass", "sequential-rerun"])
def test_block_by_block_equals_full_forward(arch, rerun):
    """Unmodified model: every block's output (first pass, and the re-run of sequential mode) equals
    the full forward; sliding-window and global layers each get their own mask."""
    model = tiny_model(arch)
    ids = _ids()
    _, ref_out, _ = _full_forward_io(model, ids)
    seen = {}
    cal = LayerwiseCalibrator(model, device="cpu", settings=CalibSettings(batch_size=3), progress=False)
    on_block = (lambda ctx: None) if rerun else None
    final = cal.run(ids, on_block) if rerun else None
    if not rerun:
        cal1 = LayerwiseCalibrator(model, device="cpu", settings=CalibSettings(batch_size=3), progress=False,
                                   sequential=False)
        for ctx in cal1.blocks(ids):
            seen[ctx.index] = ctx.outputs[0]
        for i in range(3):
            torch.testing.assert_close(seen[i], ref_out[i][0], rtol=1e-5, atol=1e-6)
    else:
        torch.testing.assert_close(final[0], ref_out[2][0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["gemma2", "gemma3_text", "mistral"])
def test_per_block_kwargs_matter(arch):
    """Block 1 run on its own recorded kwargs reproduces the full forward. Gemma 2/3 alternate sliding-window
    and global layers, so there block 0's kwargs change block 1's output: the test above would catch a
    catcher that only records block 0. Every Mistral layer uses the same sliding-window mask, so there
    the kwargs of blocks 0 and 1 are interchangeable (the same tensors, stored once)."""
    model = tiny_model(arch)
    cal = LayerwiseCalibrator(model, device="cpu", progress=False)
    ids = _ids(n=1)
    _, kwargs = cal.capture(ids)
    _, ref_out, _ = _full_forward_io(model, ids)
    block_in, _, _ = _full_forward_io(model, ids)
    with torch.no_grad():
        right = model.model.layers[1](block_in[1][0], **kwargs[1][0])
        wrong = model.model.layers[1](block_in[1][0], **kwargs[0][0])
    right = right[0] if isinstance(right, tuple) else right
    wrong = wrong[0] if isinstance(wrong, tuple) else wrong
    torch.testing.assert_close(right, ref_out[1][0], rtol=1e-5, atol=1e-6)
    if arch == "mistral":  # every Mistral layer shares one sliding mask: kwargs are interchangeable
        assert kwargs[1][0]["attention_mask"] is kwargs[0][0]["attention_mask"]
        torch.testing.assert_close(wrong, right)
    else:
        assert not torch.allclose(wrong, right, atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "phi3", "qwen2_moe"])
def test_statistics_equal_direct_computation(arch):
    model = tiny_model(arch)
    ids = _ids(n=4, seqlen=20)
    _, _, lin_in = _full_forward_io(model, ids)
    collected = {}
    cal = LayerwiseCalibrator(model, device="cpu", hessian=True, settings=CalibSettings(batch_size=3), progress=False)
    cal.run(ids, lambda ctx: collected.update({(ctx.index, n): s for n, s in ctx.stats.items()}))
    assert set(collected) == set(lin_in)
    for key, x in lin_in.items():
        s = collected[key]
        x = x.double()
        assert s.count == x.shape[0] == 4 * 20
        torch.testing.assert_close(s.sum_sq.double(), (x * x).sum(0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s.xtx.double(), x.T @ x, rtol=1e-5, atol=1e-4)
        assert s.sum_sq.dtype == s.xtx.dtype == torch.float32
        torch.testing.assert_close(s.hessian(), s.xtx * 2 / s.count)


def test_projections_that_read_one_input_share_its_statistics():
    """q/k/v read the attention norm's output and gate/up the MLP norm's: one X^T X each, computed once;
    o_proj and down_proj read tensors of their own."""
    model = tiny_model("llama")
    groups = []
    cal = LayerwiseCalibrator(model, device="cpu", hessian=True, settings=CalibSettings(batch_size=2), progress=False)
    cal.run(_ids(n=4, seqlen=16), lambda ctx: groups.append(ctx.stats))
    for stats in groups:
        q, k, v = (stats[f"self_attn.{p}_proj"] for p in "qkv")
        assert q is k is v and stats["mlp.gate_proj"] is stats["mlp.up_proj"]
        assert len({id(s) for s in stats.values()}) == 4 and q.count == 4 * 16


def _zero_o_proj(model, index):
    with torch.no_grad():
        model.model.layers[index].self_attn.o_proj.weight.zero_()


@pytest.mark.parametrize("sequential", [True, False])
def test_modification_propagates_in_sequential_mode(sequential):
    """Zeroing block 0's o_proj inside the callback: in sequential mode block 1 is calibrated on the
    modified block's outputs (= a full forward of the modified model); otherwise on the dense ones."""
    model = tiny_model("llama")
    ids = _ids(n=2)
    dense_in, _, dense_lin = _full_forward_io(model, ids)
    reference = tiny_model("llama")
    _zero_o_proj(reference, 0)
    mod_in, _, mod_lin = _full_forward_io(reference, ids)

    block1 = {}

    def on_block(ctx):
        if ctx.index == 0:
            ctx.block.self_attn.o_proj.weight.data.zero_()
        if ctx.index == 1:
            block1["inputs"], block1["stats"] = ctx.inputs[0], ctx.stats["mlp.down_proj"]

    LayerwiseCalibrator(model, device="cpu", settings=CalibSettings(batch_size=2), sequential=sequential, progress=False).run(ids, on_block)
    want_in, want_lin = (mod_in, mod_lin) if sequential else (dense_in, dense_lin)
    torch.testing.assert_close(block1["inputs"], want_in[1][0], rtol=1e-5, atol=1e-6)
    x = want_lin[(1, "mlp.down_proj")]
    torch.testing.assert_close(block1["stats"].sum_sq, (x * x).sum(0), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mod_in[1][0], dense_in[1][0])  # the modification is visible at all


def test_block_context_forward_and_device_round_trip():
    model = tiny_model("qwen2")
    ids = _ids(n=2)
    homes = []

    def on_block(ctx):
        assert next(ctx.block.parameters()).device == ctx.device
        for a, b in zip(ctx.forward(), ctx.outputs):
            torch.testing.assert_close(a, b)
        assert set(ctx.linears()) == set(ctx.stats) and ctx.name == f"model.layers.{ctx.index}"
        homes.append(ctx.index)

    LayerwiseCalibrator(model, device="cpu", progress=False).run(ids, on_block)
    assert homes == [0, 1, 2]


def test_selected_linears_and_no_stats():
    model = tiny_model("llama")
    ids = _ids(n=1)
    names = []
    LayerwiseCalibrator(model, device="cpu", linears=["mlp.down_proj"], progress=False).run(
        ids, lambda ctx: names.append(sorted(ctx.stats)))
    assert names == [["mlp.down_proj"]] * 3
    LayerwiseCalibrator(model, device="cpu", stats=False, progress=False).run(
        ids, lambda ctx: names.append(ctx.stats))
    assert names[-1] == {}
    with pytest.raises(SparsekitError, match="unknown projections"):
        LayerwiseCalibrator(model, linears=["mlp.nope"])


def test_bad_calibration_input():
    cal = LayerwiseCalibrator(tiny_model("llama"), device="cpu", progress=False)
    with pytest.raises(SparsekitError, match=r"\[nsamples, seqlen\]"):
        cal.run(torch.zeros(5, dtype=torch.long))


def test_model_is_restored_after_calibration():
    model = tiny_model("llama")
    ids = _ids(n=1)
    with torch.no_grad():
        before = model(ids).logits
    LayerwiseCalibrator(model, device="cpu", progress=False).run(ids, lambda ctx: None)
    assert all("forward" not in vars(b) for b in model.model.layers)  # recorders removed
    assert not any(lin._forward_pre_hooks for lin in get_adapter(model).linears(0).values())
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before)


@pytest.mark.gpu
def test_model_on_cpu_blocks_on_gpu():
    model = tiny_model("gemma3_text")
    ids = _ids(n=2)
    _, ref_out, _ = _full_forward_io(model, ids)
    final = LayerwiseCalibrator(model, device="cuda", progress=False).run(ids, lambda ctx: None)
    assert final[0].is_cuda and next(model.parameters()).device.type == "cpu"
    torch.testing.assert_close(final[0].cpu(), ref_out[2][0], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_default_model_block_by_block(smollm2):
    model, _ = smollm2
    ids = _ids(n=2, seqlen=64, vocab=49152)
    _, ref_out, _ = _full_forward_io(model, ids)
    final = LayerwiseCalibrator(model, device="cpu", settings=CalibSettings(batch_size=2), progress=False).run(ids)
    torch.testing.assert_close(final[0], ref_out[29][0], rtol=1e-4, atol=1e-4)


def test_calib_settings_validate_and_resolve():
    from sparsekit.calib.engine import native_bf16

    with pytest.raises(SparsekitError, match="batch_size must be an integer >= 1"):
        CalibSettings(batch_size=0)
    with pytest.raises(SparsekitError, match="forward_dtype must be one of float32, bfloat16, auto"):
        CalibSettings(forward_dtype="fp8")
    cpu = torch.device("cpu")
    assert CalibSettings().autocast_dtype(cpu) is None
    assert CalibSettings(forward_dtype="bfloat16").autocast_dtype(cpu) is torch.bfloat16
    auto = CalibSettings(forward_dtype="auto")
    assert auto.autocast_dtype(cpu) is (torch.bfloat16 if native_bf16(cpu) else None)
    assert auto.record(cpu) == {"batch_size": 8, "forward_dtype": "bfloat16" if native_bf16(cpu) else "float32"}


def test_bf16_forwards_keep_fp32_statistics_close_to_fp32():
    """bf16 autocast: the statistics stay fp32 and within bf16 rounding of the fp32 run's; outputs too."""
    model = tiny_model("llama")
    ids = _ids()
    runs = {}
    for dtype in ("float32", "bfloat16"):
        cal = LayerwiseCalibrator(model, device="cpu", hessian=True, settings=CalibSettings(2, dtype), progress=False)
        ctx = next(iter(cal.blocks(ids)))
        runs[dtype] = ctx
        assert ctx.stats["self_attn.o_proj"].xtx.dtype == torch.float32
    a, b = runs["float32"], runs["bfloat16"]
    assert b.autocast is torch.bfloat16 and a.autocast is None
    for name in ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj"):
        torch.testing.assert_close(b.stats[name].xtx, a.stats[name].xtx, rtol=0.05, atol=0.05 * float(
            a.stats[name].xtx.abs().max()))
        assert not torch.equal(b.stats[name].xtx, a.stats[name].xtx) or name == "self_attn.q_proj"
    torch.testing.assert_close(b.outputs[0], a.outputs[0], rtol=0.05, atol=0.05)


def test_batched_windows_give_the_same_statistics():
    model = tiny_model("llama")
    ids = _ids(n=5)
    got = []
    for bs in (1, 4):
        ctx = next(iter(LayerwiseCalibrator(model, device="cpu", hessian=True, settings=CalibSettings(bs),
                                            progress=False).blocks(ids)))
        got.append(ctx.stats["mlp.down_proj"])
    torch.testing.assert_close(got[0].xtx, got[1].xtx, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got[0].sum_x, got[1].sum_x, rtol=1e-5, atol=1e-5)
    assert got[0].count == got[1].count == 5 * ids.shape[1]


def test_dense_stream_carries_the_unmodified_model():
    """With dense_stream, ctx.dense_outputs are the original model's block outputs even after earlier blocks
    were modified (ctx.outputs then differ: they are this block on the modified stream)."""
    model = tiny_model("llama")
    ids = _ids()
    _, ref_out, _ = _full_forward_io(model, ids)
    cal = LayerwiseCalibrator(model, device="cpu", settings=CalibSettings(batch_size=3), progress=False)
    for ctx in cal.blocks(ids, dense_stream=True):
        torch.testing.assert_close(ctx.dense_outputs[0], ref_out[ctx.index][0], rtol=1e-5, atol=1e-6)
        if ctx.index == 0:
            torch.testing.assert_close(ctx.outputs[0], ctx.dense_outputs[0])
            with torch.no_grad():
                ctx.linears()["mlp.down_proj"].weight.mul_(0.5)
        else:
            assert not torch.allclose(ctx.outputs[0], ctx.dense_outputs[0])
