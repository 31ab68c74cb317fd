"""Per-module ratio allocation: budgets met exactly, ratios in range, optimality on small cases."""

import itertools
import math

import pytest
import torch

from sparsekit.errors import SparsekitError
from sparsekit.prune.allocation import (CostCurve, allocate_budget, global_threshold_counts, outlier_ratio,
                                        owl_ratios, per_type_ratios)


def _curves(seed: int, n: int = 12) -> dict[str, CostCurve]:
    g = torch.Generator().manual_seed(seed)
    ratios = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
    out = {}
    for i in range(n):
        rows, cols = [(64, 64), (16, 64), (96, 64), (64, 96)][i % 4]
        gran = [1, rows][i % 2]
        scale = float(torch.rand(1, generator=g)) * 10
        power = 1 + 3 * float(torch.rand(1, generator=g))
        noise = torch.rand(len(ratios), generator=g) * 0.05 * scale
        costs = tuple(scale * r ** power + float(e) for r, e in zip(ratios, noise))
        out[f"m{i}"] = CostCurve(rows * cols, gran, ratios, costs)
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("sparsity", [0.0, 0.2, 0.5, 0.6, 0.85, 0.89])
def test_budget_is_met_to_one_group_and_ratios_stay_in_range(seed, sparsity):
    curves = _curves(seed)
    total = sum(c.size for c in curves.values())
    budget = round(sparsity * total)
    removed = allocate_budget(curves, budget)
    # short of the budget by less than one selection step of the modules that still have room
    room = [c.granularity for n, c in curves.items() if removed[n] < c.max_units() * c.granularity]
    assert 0 <= budget - sum(removed.values()) < (min(room) if room else 1)
    for name, k in removed.items():
        c = curves[name]
        assert k % c.granularity == 0
        assert 0 <= k <= 0.9 * c.size + 1e-9


def test_budget_to_one_group_with_only_row_granularity():
    curves = {f"m{i}": CostCurve(64 * 64, 64, (0.5, 0.9), (float(i + 1), 3.0 * (i + 1))) for i in range(4)}
    total = 4 * 64 * 64
    for budget in (1000, 5001, round(0.6 * total)):
        got = sum(allocate_budget(curves, budget).values())
        assert budget - 64 < got <= budget


def test_greedy_is_optimal_on_convex_curves():
    # three modules, unit granularity, convex costs: compare with brute force over the unit grid
    curves = {"a": CostCurve(10, 1, (0.5, 1.0), (1.0, 4.0)),
              "b": CostCurve(10, 1, (0.5, 1.0), (0.5, 3.0)),
              "c": CostCurve(20, 1, (0.5, 1.0), (4.0, 20.0))}

    def cost(name, k):
        c = curves[name]
        xs = [0.0] + [r * c.size for r in c.ratios]
        ys = [0.0, *c.costs]
        for (x1, y1), (x2, y2) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
            if x1 <= k <= x2:
                return y1 + (y2 - y1) * (k - x1) / (x2 - x1)
        return math.inf

    budget = 17
    got = allocate_budget(curves, budget)
    best = min(sum(cost(n, k) for n, k in zip("abc", ks))
               for ks in itertools.product(range(11), range(11), range(21)) if sum(ks) == budget)
    assert sum(got.values()) == budget
    assert sum(cost(n, k) for n, k in got.items()) == pytest.approx(best)


def test_cheaper_module_is_pruned_more():
    curves = {"cheap": CostCurve(100, 1, (0.5, 0.9), (0.1, 0.5)), "dear": CostCurve(100, 1, (0.5, 0.9), (5.0, 20.0))}
    got = allocate_budget(curves, 100)
    assert got["cheap"] == 90 and got["dear"] == 10


def test_budget_beyond_the_search_ratios_is_an_error():
    curves = {"a": CostCurve(100, 1, (0.5,), (1.0,))}
    with pytest.raises(SparsekitError, match="at most 50"):
        allocate_budget(curves, 60)


def test_global_threshold_matches_a_sort():
    g = torch.Generator().manual_seed(0)
    scores = {"a": torch.rand(7, 9, generator=g), "b": torch.rand(3, 5, generator=g) * 2, "c": torch.rand(11, generator=g)}
    scores["c"][:3] = scores["a"][0, 0]  # ties at the threshold
    flat = torch.cat([s.flatten() for s in scores.values()])
    for budget in (0, 1, 17, 40, flat.numel()):
        counts = global_threshold_counts(scores, budget)
        assert sum(counts.values()) == budget
        if 0 < budget < flat.numel():
            t = torch.sort(flat).values[budget - 1]
            for name, s in scores.items():
                assert int((s < t).sum()) <= counts[name] <= int((s <= t).sum())


def test_owl_ratios_mean_spread_and_order():
    outliers = [0.01, 0.05, 0.02, 0.10, 0.03]
    ratios = owl_ratios(outliers, sparsity=0.7, spread=0.08)
    assert sum(ratios) / len(ratios) == pytest.approx(0.7)
    assert max(ratios) - min(ratios) == pytest.approx(0.16)
    # more outliers -> more weights kept
    assert sorted(range(5), key=lambda i: outliers[i]) == sorted(range(5), key=lambda i: -ratios[i])
    assert owl_ratios([0.2, 0.2], 0.5) == [0.5, 0.5]
    with pytest.raises(SparsekitError, match="outside"):
        owl_ratios(outliers, sparsity=0.05, spread=0.2)


def test_outlier_ratio():
    scores = [torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 100.0])]
    assert outlier_ratio(scores, threshold=5.0) == pytest.approx(0.1)


def test_per_type_ratios_role_beats_group():
    roles = {"l.q": "q", "l.k": "k", "l.o": "o", "l.up": "up", "l.down": "down"}
    got = per_type_ratios(roles, {"attention": 0.3, "q": 0.6, "mlp": 0.5}, default=0.1)
    assert got == {"l.q": 0.6, "l.k": 0.3, "l.o": 0.3, "l.up": 0.5, "l.down": 0.5}
    assert per_type_ratios(roles, {"down": 0.4}, default=0.2)["l.up"] == 0.2
    with pytest.raises(SparsekitError, match="unknown module types"):
        per_type_ratios(roles, {"ffn": 0.5}, 0.5)
