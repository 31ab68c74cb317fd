"""Mask selection: exact counts, per-row vs per-layer ranking, N:M groups along the input dimension."""

import pytest
import torch

from sparsekit.errors import SparsekitError
from sparsekit.prune.patterns import (UNSTRUCTURED, Pattern, check_shape, is_nm, masks_sparsity, nm_mask,
                                      parse_pattern, select_mask, unstructured_mask)


@pytest.mark.parametrize("text, expected", [("2:4", Pattern(2, 4)), ("4:8", Pattern(4, 8)), (" 1 : 3 ", Pattern(1, 3)),
                                            ("unstructured", UNSTRUCTURED)])
def test_parse_pattern(text, expected):
    assert parse_pattern(text) == expected


@pytest.mark.parametrize("text", ["4:2", "0:4", "2:2", "2-4", "half"])
def test_parse_pattern_rejects(text):
    with pytest.raises(SparsekitError, match="N:M|0 < N < M"):
        parse_pattern(text)


@pytest.mark.parametrize("n, m", [(2, 4), (4, 8), (1, 4), (3, 8), (1, 2)])
def test_nm_mask_keeps_exactly_n_per_group_along_inputs(n, m):
    scores = torch.rand(13, 8 * m, generator=torch.Generator().manual_seed(n * 10 + m))
    mask = nm_mask(scores, n, m)
    groups = mask.reshape(13, 8, m)
    assert torch.equal(groups.sum(-1), torch.full((13, 8), n))
    assert is_nm(mask, n, m)
    # the kept entries are the n largest of each group
    kept_min = torch.where(groups, scores.reshape(13, 8, m), torch.inf).amin(-1)
    dropped_max = torch.where(~groups, scores.reshape(13, 8, m), -torch.inf).amax(-1)
    assert bool((kept_min >= dropped_max).all())


def test_nm_groups_run_along_the_input_dimension():
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 4.0]])
    assert nm_mask(scores, 2, 4).tolist() == [[True, True, False, False, False, False, True, True]]


def test_unstructured_row_and_layer_counts_are_exact():
    scores = torch.rand(10, 30, generator=torch.Generator().manual_seed(1))
    row = unstructured_mask(scores, 0.37, "row")
    assert torch.equal((~row).sum(1), torch.full((10,), round(0.37 * 30)))
    layer = unstructured_mask(scores, 0.37, "layer")
    assert int((~layer).sum()) == round(0.37 * 300)
    assert masks_sparsity({"a": layer}) == pytest.approx(round(0.37 * 300) / 300)


@pytest.mark.parametrize("sparsity", [0.0, 1.0])
def test_unstructured_extremes(sparsity):
    scores = torch.rand(4, 8)
    assert float(unstructured_mask(scores, sparsity, "row").float().mean()) == 1.0 - sparsity


def test_select_mask_ignores_sparsity_for_nm():
    scores = torch.rand(4, 8)
    assert torch.equal(select_mask(scores, 0.9, "2:4"), nm_mask(scores, 2, 4))


def test_shape_errors_name_the_constraint():
    with pytest.raises(SparsekitError, match="in_features=10 is not a multiple of M=4"):
        check_shape(parse_pattern("2:4"), (3, 10), "layer.q_proj")
    with pytest.raises(SparsekitError, match="sparsity must be in"):
        unstructured_mask(torch.rand(2, 4), 1.5)
