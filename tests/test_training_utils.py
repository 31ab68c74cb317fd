"""The shared training helpers: flags restored and gradients dropped whatever happens, zeros kept exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from sparsekit.utils.training import masked_step, only_trainable


def test_only_trainable_freezes_the_rest_and_restores_flags_on_error() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    model[1].bias.requires_grad_(False)  # a flag the caller set must come back as it was
    before = [p.requires_grad for p in model.parameters()]
    with pytest.raises(RuntimeError, match="boom"):
        with only_trainable(model, [model[0].weight]):
            assert [p.requires_grad for p in model.parameters()] == [True, False, False, False]
            model(torch.randn(3, 4)).sum().backward()
            assert model[0].weight.grad is not None and model[0].bias.grad is None
            raise RuntimeError("boom")
    assert [p.requires_grad for p in model.parameters()] == before
    assert all(p.grad is None for p in model.parameters())


def test_masked_step_keeps_pruned_weights_exactly_zero_under_adam() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(8, 8, bias=False)
    keep = (torch.rand(8, 8) > 0.5).float()
    params = {"w": lin.weight}
    opt = torch.optim.AdamW([lin.weight], lr=1e-1, weight_decay=0.1)

    def loss() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        out = lin(torch.randn(16, 8)).pow(2).sum()
        out.backward()
        return out

    with only_trainable(lin, params.values()):
        loss()
        masked_step(opt, params, {"w": keep})
        # a fresh optimizer's moments never saw a pruned weight's gradient
        assert torch.equal(opt.state[lin.weight]["exp_avg"][keep == 0], torch.zeros(int((keep == 0).sum())))
        loss()
        opt.step()  # an unmasked step: every moment non-zero, so Adam alone would move the pruned weights
        with torch.no_grad():
            lin.weight.mul_(keep)
        start = lin.weight.detach().clone()
        for _ in range(3):
            loss()
            masked_step(opt, params, {"w": keep})
    assert torch.equal(lin.weight[keep == 0], torch.zeros(int((keep == 0).sum())))
    assert not torch.equal(lin.weight[keep == 1], start[keep == 1])  # the kept weights did train
