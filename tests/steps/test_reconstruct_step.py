"""The `reconstruct` step: block-wise reconstruction of a model changed by earlier steps (structured
removal, pruning) against the model as it entered the recipe."""

import pytest
import torch

import sparsekit
from sparsekit.data.calibration import calibration_texts, calibration_windows
from sparsekit.errors import SparsekitError
from sparsekit.nn import use_dense_kernels
from sparsekit.prune.patterns import is_nm
from sparsekit.recipe import Recipe, Reconstruct
from sparsekit.steps.heal import distill_loss
from sparsekit.steps.records import ReconstructRecord, StepRecord

OPTS = dict(nsamples=8, seqlen=32, progress=False)
SHRINK = {"prune_channels": {"ratio": 0.5}}
FIT = {"reconstruct": {"epochs": 3, "lr": 1e-4, "nsamples": 8}}  # tiny random weights: a small step


def _gap(model, teacher, ids):
    with torch.no_grad():
        return float(distill_loss(model(ids).logits, teacher(ids).logits))


def test_reconstruct_after_channel_removal_fits_each_block_and_closes_the_gap(tiny_dir, data_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    shrunk = sparsekit.compress(str(tiny_dir), [SHRINK], data_dir=data_dir, **OPTS)
    fitted = sparsekit.compress(str(tiny_dir), [SHRINK, FIT], data_dir=data_dir, **OPTS)
    record = fitted.steps[-1]
    assert isinstance(record, ReconstructRecord) and len(record.blocks) == teacher.config.num_hidden_layers
    assert all(after <= before for before, after in record.blocks.values())
    assert any(after < before for before, after in record.blocks.values())
    assert StepRecord.from_dict(record.to_dict()) == record
    # the last block's error is the whole stack's (each block is fitted to the entry model's hidden states):
    # the next-token distributions move toward the entry model's on other C4 windows than the fit's
    last = record.blocks[str(len(record.blocks) - 1)]
    assert last[1] < last[0]
    held_out = calibration_windows(AutoTokenizer.from_pretrained(tiny_dir), "c4", nsamples=8, seqlen=32, seed=7,
                                   texts=calibration_texts("c4", data_dir))
    assert _gap(fitted.model, teacher, held_out) < _gap(shrunk.model, teacher, held_out)
    # same widths as the shrunk model: reconstruction changes values, never shapes
    for (name, a), (_, b) in zip(fitted.model.named_parameters(), shrunk.model.named_parameters()):
        assert a.shape == b.shape, name


def test_reconstruct_keeps_pruned_weights_zero_and_n_m_valid(tiny_dir, data_dir):
    pruned = sparsekit.compress(str(tiny_dir), [{"prune": {"method": "wanda", "pattern": "2:4"}}, FIT],
                                data_dir=data_dir, **OPTS)
    assert pruned.masks
    for name, mask in pruned.masks.items():
        w = pruned.model.get_submodule(name).weight
        assert bool((w[~mask] == 0).all()) and is_nm(w != 0, 2, 4)


def test_saved_reconstructed_model_loads_with_its_record(tiny_dir, data_dir, tmp_path):
    result = sparsekit.compress(str(tiny_dir), [SHRINK, FIT], data_dir=data_dir, **OPTS)
    model, _ = sparsekit.load(sparsekit.save(result, tmp_path / "r"))
    use_dense_kernels(result.model, "head")  # the loaded model's head kernel (sparsekit.load): like for like
    ids = torch.randint(3, 300, (1, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, result.model(ids).logits)
    assert "block-wise reconstruction" in Recipe.from_list([SHRINK, FIT]).describe()


def test_reconstruct_refuses_a_model_with_other_blocks(tiny_dir, data_dir):
    with pytest.raises(SparsekitError, match="cannot follow drop_blocks"):
        sparsekit.compress(str(tiny_dir), [{"drop_blocks": {"method": "last", "n": 1}}, FIT], data_dir=data_dir,
                           **OPTS)


@pytest.mark.parametrize("recipe, message", [
    ([{"prune": {"method": "wanda", "sparsity": 0.5}}, {"quantize": {"format": "int8"}}, FIT],
     "reconstruct before quantizing"),
    ([{"reconstruct": {"epochs": 0}}], "epochs must be"),
    ([{"reconstruct": {"lr": 0}}], "lr must be > 0"),
    ([{"reconstruct": {"schedule": "step"}}], "schedule must be one of constant, linear"),
    ([{"reconstruct": {"target": "block"}}], "target"),
])
def test_bad_recipes(recipe, message):
    with pytest.raises(SparsekitError, match=message):
        Recipe.from_list(recipe)


def test_defaults_are_the_prune_options():
    from sparsekit.recipe import ReconstructOptions

    opts, step = ReconstructOptions(), Reconstruct()
    assert (step.epochs, step.lr, step.nsamples, step.schedule) == (opts.epochs, opts.lr, opts.nsamples,
                                                                    opts.schedule)
