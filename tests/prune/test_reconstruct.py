"""Block-wise reconstruction: never increases the calibration error, keeps pruned weights exactly zero."""

import pytest
import torch

from sparsekit.calib import CalibSettings, LayerwiseCalibrator
from sparsekit.prune.methods import prune_weight
from sparsekit.prune.patterns import is_nm
import sparsekit.prune.reconstruct as reconstruct_mod
from sparsekit.prune.reconstruct import reconstruct_block
from sparsekit.utils.training import lr_factor
from tests.tiny import tiny_model


def _ids(n=4, seqlen=32, vocab=300, seed=0):
    return torch.randint(3, vocab, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def _prune_and_fit(lr, epochs=3, arch="llama", train_batches=None, schedule="constant"):
    model = tiny_model(arch)
    results = []
    cal = LayerwiseCalibrator(model, device="cpu", settings=CalibSettings(batch_size=1), progress=False)
    for ctx in cal.blocks(_ids()):
        linears = ctx.linears()
        masks = {}
        for name, lin in linears.items():
            new, masks[name] = prune_weight("wanda", lin.weight.data, ctx.stats[name], 0.5, "2:4")
            lin.weight.data.copy_(new)
        before = {name: lin.weight.detach().clone() for name, lin in linears.items()}
        fit = reconstruct_block(ctx.block, linears, masks, ctx.forward_batch, ctx.outputs, epochs=epochs, lr=lr,
                                train_batches=train_batches, schedule=schedule)
        results.append((fit, linears, masks, before))
        break  # block 0 is enough
    return results[0]


def test_error_goes_down_and_masks_hold():
    fit, linears, masks, _ = _prune_and_fit(lr=1e-3)
    assert fit.after < 0.9 * fit.before and fit.epoch >= 1
    for name, lin in linears.items():
        assert bool((lin.weight[~masks[name]] == 0).all())
        assert is_nm(masks[name], 2, 4)
        assert lin.weight.grad is None


def test_a_step_that_hurts_is_rolled_back():
    """With an absurd learning rate every epoch is worse than the start: the block keeps its weights."""
    fit, linears, _, before = _prune_and_fit(lr=10.0, epochs=1)
    assert fit.epoch == 0 and fit.after == fit.before
    for name, lin in linears.items():
        assert torch.equal(lin.weight.detach(), before[name])


@pytest.mark.parametrize("arch", ["qwen2", "gemma2"])
def test_other_architectures(arch):
    fit, _, _, _ = _prune_and_fit(lr=1e-3, epochs=1, arch=arch)
    assert fit.after <= fit.before


def test_training_on_some_batches_is_judged_on_all():
    fit, linears, masks, _ = _prune_and_fit(lr=1e-3, train_batches=2)
    assert fit.after < fit.before  # measured on the 4 batches, 2 of them held out
    for name, lin in linears.items():
        assert bool((lin.weight[~masks[name]] == 0).all())


def test_linear_schedule_decays_to_zero(monkeypatch):
    """Each Adam step runs at lr * (total - k) / total: 4 batches x 3 epochs = 12 steps, the last at lr / 12."""
    seen = []
    real = reconstruct_mod.masked_step

    def spy(opt, params, keep):
        seen.append(opt.param_groups[0]["lr"])
        real(opt, params, keep)

    monkeypatch.setattr(reconstruct_mod, "masked_step", spy)
    fit, linears, masks, _ = _prune_and_fit(lr=1e-3, schedule="linear")
    assert seen == pytest.approx([1e-3 * (12 - k) / 12 for k in range(12)])
    assert fit.after < fit.before
    for name, lin in linears.items():
        assert bool((lin.weight[~masks[name]] == 0).all()) and is_nm(masks[name], 2, 4)


def test_lr_factor_warms_up_then_decays():
    assert [lr_factor(k, 4) for k in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert [lr_factor(k, 6, warmup=0.25) for k in range(6)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]


def test_unknown_schedule():
    with pytest.raises(ValueError, match="schedule must be one of"):
        _prune_and_fit(lr=1e-3, schedule="cosine")
