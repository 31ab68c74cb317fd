"""GPTQ and the joint SparseGPT + GPTQ sweep: error vs RTN, masks, act-order, codes that decode exactly."""

import pytest
import torch

from sparsekit.calib.stats import LinearStats, accumulate
from sparsekit.errors import SparsekitError
from sparsekit.prune.patterns import is_nm
from sparsekit.prune.sparsegpt import sparsegpt
from sparsekit.quant import IntFormat, get_format, gptq, sparsegpt_gptq


def _layer(rows=48, cols=256, tokens=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, cols, generator=g) @ torch.randn(cols, cols, generator=g) * 0.2
    x = x * torch.linspace(0.1, 3.0, cols)[torch.randperm(cols, generator=g)]
    w = torch.randn(rows, cols, generator=g) * 0.05
    stats = accumulate(LinearStats.empty(cols, hessian=True), x)
    return w, x, stats


def _err(x, w, w_hat):
    return float((x @ w.T - x @ w_hat.T).pow(2).sum())


@pytest.mark.parametrize("name, group, sym", [("int4", 128, True), ("int3", 128, True), ("int4", 128, False),
                                              ("int3", 128, False), ("int2", 128, False), ("int4", 0, True),
                                              ("mxfp4", None, True), ("mxfp6", None, True), ("mxint8", None, True),
                                              ("fp6", None, True), ("ternary", None, True)])
def test_gptq_lowers_the_output_error_vs_rtn(name, group, sym):
    w, x, stats = _layer()
    fmt = get_format(name, group, sym)
    new, q = gptq(w, stats.xtx, fmt)
    assert _err(x, w, new) < 0.9 * _err(x, w, fmt.fake_quantize(w))
    assert torch.equal(fmt.dequantize(q), new)  # the codes + scales are exactly the returned weights


@pytest.mark.parametrize("act_order", [False, True])
def test_quantizing_a_pruned_layer_keeps_its_zeros(act_order):
    w, x, stats = _layer()
    pruned, keep = sparsegpt(w, stats.xtx, pattern="2:4")
    fmt = IntFormat(4, 128)
    new, q = gptq(pruned, stats.xtx, fmt, mask=keep, act_order=act_order)
    # keep is 2:4 and every pruned weight stays zero, so the result is still 2:4 sparse (not
    # is_nm(new != 0): a kept weight may also round to 0)
    assert is_nm(keep, 2, 4) and bool((new[~keep] == 0).all())
    assert torch.equal(fmt.dequantize(q), new)
    assert _err(x, pruned, new) < _err(x, pruned, fmt.fake_quantize(pruned, keep))


def test_act_order_uses_static_groups_and_helps():
    w, x, stats = _layer(seed=3)
    fmt = IntFormat(3, 128)
    plain, _ = gptq(w, stats.xtx, fmt)
    ordered, q = gptq(w, stats.xtx, fmt, act_order=True)
    assert torch.equal(fmt.dequantize(q), ordered)
    assert _err(x, w, ordered) < 1.1 * _err(x, w, plain)  # usually lower; never much worse


def test_gptq_of_grid_values_changes_nothing():
    w, _, stats = _layer()
    fmt = IntFormat(4, 128)
    on_grid = fmt.fake_quantize(w)
    new, _ = gptq(on_grid, stats.xtx, fmt, act_order=True)  # static groups: params from these very values
    assert torch.equal(new, on_grid)


@pytest.mark.parametrize("pattern, sparsity", [("2:4", 0.5), ("unstructured", 0.5)])
def test_joint_beats_prune_then_rtn(pattern, sparsity):
    w, x, stats = _layer(seed=1)
    fmt = IntFormat(4, 128)
    joint, keep, q = sparsegpt_gptq(w, stats.xtx, fmt, sparsity, pattern)
    if pattern == "2:4":
        assert is_nm(keep, 2, 4)
    else:
        assert float((~keep).float().mean()) == pytest.approx(0.5)
    assert bool((joint[~keep] == 0).all())
    assert torch.equal(fmt.dequantize(q), joint)
    pruned, keep2 = sparsegpt(w, stats.xtx, sparsity, pattern)
    assert _err(x, w, joint) < _err(x, w, fmt.fake_quantize(pruned, keep2))


def test_errors():
    w, _, stats = _layer()
    with pytest.raises(SparsekitError, match="act-order"):
        sparsegpt(w, stats.xtx, 0.5, perm=torch.arange(w.shape[1]))
    bad = w.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(SparsekitError, match="blk.0.q: 1 NaN/Inf"):
        gptq(bad, stats.xtx, IntFormat(4, 128), name="blk.0.q")
    with pytest.raises(SparsekitError, match="mask has shape"):
        gptq(w, stats.xtx, IntFormat(4, 128), mask=torch.ones(3, 3, dtype=torch.bool))


@pytest.mark.parametrize("act_order", [False, True])
def test_short_last_group(act_order):
    w, x, stats = _layer(cols=200)  # groups of 128: one whole, one of 72
    fmt = IntFormat(4, 128)
    new, q = gptq(w, stats.xtx, fmt, act_order=act_order)
    assert q.scales.shape == (w.shape[0], 2)
    assert torch.equal(fmt.dequantize(q), new)
    assert _err(x, w, new) < _err(x, w, fmt.fake_quantize(w))
