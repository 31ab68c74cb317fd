"""N:M channel permutation (RIA §3.3): never retains less, finds the optimum on small cases, and the
folds into the model (MLP channels, value channels) leave the function exactly as it was."""

import itertools

import pytest
import torch

from sparsekit.calib import LayerwiseCalibrator
from sparsekit.models import get_adapter, surgery
from sparsekit.prune.permute import nm_permutation, retained
from sparsekit.recipe import Prune
from sparsekit.steps.prune import permute_block
from sparsekit.steps.targets import by_block, step_targets
from tests.tiny import tiny_model


def _brute_force(scores, n, m):
    """The best retained score over every split of the K channels into groups of M (K = 8: 35 splits)."""
    k = scores.shape[1]
    best = 0.0
    rest = list(range(1, k))
    for others in itertools.combinations(rest, m - 1):
        first = [0, *others]
        remaining = [c for c in range(k) if c not in first]
        order = torch.tensor(first + remaining)
        best = max(best, retained(scores, n, m, order))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_permutation_is_valid_and_never_retains_less(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(24, 64, generator=g) * torch.rand(64, generator=g) ** 3
    for pattern, (n, m) in (("2:4", (2, 4)), ("4:8", (4, 8))):
        perm = nm_permutation(scores, pattern)
        assert sorted(perm.tolist()) == list(range(64))
        assert retained(scores, n, m, perm) >= retained(scores, n, m)


def test_crowded_channels_are_spread_to_the_optimum():
    # the four important channels sit in one group of 4: 2:4 keeps only two of them
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(6, 8, generator=g) * 0.1
    scores[:, :4] += 10.0
    perm = nm_permutation(scores, "2:4")
    assert retained(scores, 2, 4, perm) == pytest.approx(_brute_force(scores, 2, 4), rel=1e-6)
    assert retained(scores, 2, 4, perm) > 1.9 * retained(scores, 2, 4)
    with pytest.raises(ValueError, match="N:M pattern"):
        nm_permutation(scores, "unstructured")


@pytest.mark.parametrize("seed", range(3))
def test_small_random_cases_reach_the_brute_force_optimum(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(5, 8, generator=g) ** 2
    assert retained(scores, 2, 4, nm_permutation(scores, "2:4")) >= 0.98 * _brute_force(scores, 2, 4)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits


@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi3", "gemma2"])
def test_folded_permutations_keep_the_function(arch):
    model = tiny_model(arch)
    adapter = get_adapter(model)
    ids = torch.randint(3, 300, (2, 20), generator=torch.Generator().manual_seed(1))
    ref = _logits(model, ids)
    q_heads, kv_heads, d = surgery.attention_geometry(adapter, 0)
    width = adapter.linears(0)["mlp.down_proj"].in_features
    surgery.permute_mlp_channels(adapter, 0, torch.randperm(width, generator=torch.Generator().manual_seed(2)))
    surgery.permute_value_channels(adapter, 1, torch.stack([torch.randperm(d) for _ in range(kv_heads)]))
    moved = adapter.linears(0)["mlp.down_proj"].weight
    torch.testing.assert_close(_logits(model, ids), ref, rtol=1e-5, atol=1e-5)
    assert moved is adapter.linears(0)["mlp.down_proj"].weight  # in place: same parameters
    with pytest.raises(Exception, match="permutation"):
        surgery.permute_mlp_channels(adapter, 0, torch.zeros(width, dtype=torch.long))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_permute_block_keeps_the_function_and_reorders_statistics(arch):
    """permute_block on unpruned weights: same block outputs, and the reordered statistics equal those
    measured on the permuted block."""
    model = tiny_model(arch)
    adapter = get_adapter(model)
    step = Prune(method="wanda", pattern="2:4", permute=True)
    targets = by_block(step_targets(adapter, step))
    ids = torch.randint(3, 300, (3, 24), generator=torch.Generator().manual_seed(0))
    ctx = next(iter(LayerwiseCalibrator(model, device="cpu", progress=False).blocks(ids)))
    moved = permute_block(adapter, step, 0, ctx.linears(), ctx.stats, targets[0])
    assert set(moved) == {"mlp.down_proj", "self_attn.o_proj"} and moved["mlp.down_proj"] > 0
    torch.testing.assert_close(ctx.forward()[0], ctx.outputs[0], rtol=1e-5, atol=1e-5)
    fresh = next(iter(LayerwiseCalibrator(model, device="cpu", sequential=False, progress=False).blocks(ids)))
    for name in ("mlp.down_proj", "self_attn.o_proj"):
        torch.testing.assert_close(ctx.stats[name].sum_sq, fresh.stats[name].sum_sq, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ctx.stats[name].sum_x, fresh.stats[name].sum_x, rtol=1e-5, atol=1e-6)
