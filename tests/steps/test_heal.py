"""Healing by distillation: pruned weights stay exactly zero (N:M stays N:M), the student moves toward the
teacher, the run resumes from its saved state, and the recipe refuses what cannot work."""

import shutil

import pytest
import torch

from sparsekit.api import compress
from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import get_adapter
from sparsekit.prune.patterns import is_nm
from sparsekit.recipe import Heal, Recipe
from sparsekit.steps.heal import distill_loss, head_distill_loss, loss_curve, plain_head, squarehead_loss
from sparsekit.steps.records import HealRecord, StepRecord

OPTS = dict(nsamples=4, seqlen=32, progress=False)
PRUNE = {"prune": {"method": "wanda", "pattern": "2:4"}}


def _heal(**kw):
    return {"heal": {"tokens": 8 * 2 * 32, "seqlen": 32, "batch_size": 2, "lr": 1e-3, **kw}}


def _teacher_gap(compressed, teacher_model, ids):
    with torch.no_grad():
        return float(distill_loss(compressed.model(ids).logits, teacher_model(ids).logits))


def test_distill_loss_is_kl_and_zero_on_equal_logits():
    z = torch.randn(2, 5, 11)
    assert float(distill_loss(z, z)) == pytest.approx(0.0, abs=1e-6)
    t = torch.randn(2, 5, 11)
    p = torch.softmax(t, -1)
    kl = (p * (torch.log_softmax(t, -1) - torch.log_softmax(z, -1))).sum(-1).mean()
    assert float(distill_loss(z, t)) == pytest.approx(float(kl), rel=1e-5)
    assert float(distill_loss(z, t, 2.0)) != pytest.approx(float(kl), rel=1e-3)


@pytest.mark.parametrize("temperature,bias", [(1.0, False), (2.0, True)])
def test_head_distill_loss_is_distill_loss_of_the_heads_logits_with_its_gradient(temperature, bias):
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(8, 37, bias=bias), torch.nn.Linear(8, 37, bias=bias)
    for head in (student, teacher):
        head.requires_grad_(False)
    hs = torch.randn(2, 11, 8, requires_grad=True)  # 22 tokens: slices of 5 leave a short last one
    ht = torch.randn(2, 11, 8)
    plain = distill_loss(student(hs), teacher(ht), temperature)
    (g_plain,) = torch.autograd.grad(plain, hs)
    fused = head_distill_loss(hs, ht, student, teacher, temperature, slice_=5)
    (g_fused,) = torch.autograd.grad(3.0 * fused, hs)  # the incoming gradient scales it
    assert float(fused.detach()) == pytest.approx(float(plain.detach()), rel=1e-5)
    torch.testing.assert_close(g_fused, 3.0 * g_plain, rtol=1e-4, atol=1e-7)
    student.weight.requires_grad_(True)
    with pytest.raises(SparsekitError, match="frozen LM head"):
        head_distill_loss(hs, ht, student, teacher)


def test_plain_head_is_found_only_where_the_logits_are_the_head_of_the_last_hidden_state(tiny_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(1))
    assert plain_head(model, ids, None) is model.get_output_embeddings()
    assert plain_head(model, ids, torch.bfloat16) is model.get_output_embeddings()

    class Scaled(type(model)):  # a logit scale after the head (as Granite / Cohere models have)
        def forward(self, input_ids=None, logits_to_keep=0, **kw):
            out = super().forward(input_ids=input_ids, logits_to_keep=logits_to_keep, **kw)
            out.logits = out.logits * 0.5
            return out

    model.__class__ = Scaled
    assert plain_head(model, ids, None) is None


def test_squarehead_loss_is_the_papers_sum_of_normalised_errors():
    teacher = [torch.randn(2, 5, 8) * scale for scale in (1.0, 10.0, 0.1)]
    assert float(squarehead_loss(teacher, teacher)) == 0.0
    student = [t + 0.5 * torch.randn_like(t) for t in teacher]
    by_hand = sum(((s - t) ** 2).mean() / (t ** 2).mean() for s, t in zip(student, teacher))
    assert float(squarehead_loss(student, teacher)) == pytest.approx(float(by_hand), rel=1e-5)
    # each block's term is relative: scaling one block's states (both models) leaves the loss unchanged
    scaled = squarehead_loss([student[0], 7 * student[1], student[2]], [teacher[0], 7 * teacher[1], teacher[2]])
    assert float(scaled) == pytest.approx(float(by_hand), rel=1e-5)
    with pytest.raises(SparsekitError, match="as many student as teacher hidden states"):
        squarehead_loss(student[:2], teacher)


def test_heal_with_squarehead_keeps_the_mask_and_closes_the_gap(tiny_dir, data_dir):
    pruned = compress(str(tiny_dir), [PRUNE], data_dir=data_dir, **OPTS)
    healed = compress(str(tiny_dir), [PRUNE, _heal(squarehead=1.0)], data_dir=data_dir, **OPTS)
    logits_only = compress(str(tiny_dir), [PRUNE, _heal()], data_dir=data_dir, **OPTS)
    record = healed.steps[-1]
    assert record.loss_last < record.loss_first
    # the same first batch and student: the feature term is added on top of the KL
    assert record.loss_first > logits_only.steps[-1].loss_first
    for name, mask in healed.masks.items():
        w = healed.model.get_submodule(name).weight
        assert bool((w[~mask] == 0).all()) and is_nm(mask, 2, 4)
    ids = torch.randint(0, healed.model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(5))
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    with torch.no_grad():
        t = teacher(ids, output_hidden_states=True).hidden_states[1:]
        before = squarehead_loss(pruned.model(ids, output_hidden_states=True).hidden_states[1:], t)
        after = squarehead_loss(healed.model(ids, output_hidden_states=True).hidden_states[1:], t)
        after_kl = squarehead_loss(logits_only.model(ids, output_hidden_states=True).hidden_states[1:], t)
    # the student's hidden states moved toward the teacher's, further than distilling the logits alone moves them
    assert float(after) < float(before) and float(after) < float(after_kl)


def test_loss_curve_means_each_tenth():
    assert loss_curve([float(i) for i in range(20)]) == [0.5 + 2 * i for i in range(10)]
    assert loss_curve([1.0, 3.0, 5.0]) == [1.0, 3.0, 5.0]
    assert loss_curve([2.0] * 15, parts=4) == [2.0] * 4 and loss_curve([]) == []


def test_heal_keeps_the_mask_and_closes_the_gap(tiny_dir, data_dir):
    pruned = compress(str(tiny_dir), [PRUNE], data_dir=data_dir, **OPTS)
    healed = compress(str(tiny_dir), [PRUNE, _heal()], data_dir=data_dir, **OPTS)
    record = healed.steps[-1]
    assert isinstance(record, HealRecord) and record.steps == 8 and record.tokens == 512
    assert 0 < record.first_step_seconds < record.seconds
    assert record.loss_last < record.loss_first
    assert len(record.loss_curve) == 8 and record.loss_curve[0] == record.loss_first
    assert record.loss_curve[-1] == record.loss_last
    assert StepRecord.from_dict(record.to_dict()) == record
    adapter = get_adapter(healed.model)
    for name, mask in healed.masks.items():
        w = healed.model.get_submodule(name).weight
        assert bool((w[~mask] == 0).all()) and is_nm(mask, 2, 4)
    assert torch.equal(healed.masks[next(iter(healed.masks))], pruned.masks[next(iter(pruned.masks))])
    # the embeddings stay as they were; block weights moved
    emb = adapter.embed_tokens.weight
    assert torch.equal(emb, get_adapter(pruned.model).embed_tokens.weight)
    name = next(iter(healed.masks))
    assert not torch.equal(healed.model.get_submodule(name).weight, pruned.model.get_submodule(name).weight)


def test_heal_through_the_fused_head_trains_as_the_plain_loss_does(tiny_dir, data_dir, monkeypatch):
    fused = compress(str(tiny_dir), [PRUNE, _heal()], data_dir=data_dir, **OPTS)
    monkeypatch.setattr("sparsekit.steps.heal.plain_head", lambda *a: None)  # every model on the full logits
    plain = compress(str(tiny_dir), [PRUNE, _heal()], data_dir=data_dir, **OPTS)
    assert fused.steps[-1].loss_first == pytest.approx(plain.steps[-1].loss_first, rel=1e-4)
    assert fused.steps[-1].loss_last == pytest.approx(plain.steps[-1].loss_last, rel=1e-3)
    for (name, a), b in zip(fused.model.state_dict().items(), plain.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5, msg=name)


def test_heal_on_packed_windows_keeps_the_mask_and_learns(tiny_dir, data_dir):
    """`windows: packed` reaches the step (other windows than the documents' draw, so another loss) and heals
    under the same guarantees."""
    docs = compress(str(tiny_dir), [PRUNE, _heal()], data_dir=data_dir, **OPTS)
    packed = compress(str(tiny_dir), [PRUNE, _heal(windows="packed")], data_dir=data_dir, **OPTS)
    record = packed.steps[-1]
    assert record.tokens == 512 and record.loss_last < record.loss_first
    assert record.loss_first != docs.steps[-1].loss_first
    for name, mask in packed.masks.items():
        w = packed.model.get_submodule(name).weight
        assert bool((w[~mask] == 0).all()) and is_nm(mask, 2, 4)


def test_heal_resumes_where_it_stopped(tiny_dir, data_dir, tmp_path, monkeypatch):
    """A run interrupted after its step-4 save, run again, ends with the weights of an uninterrupted run."""
    import sparsekit.steps.heal as heal

    full = compress(str(tiny_dir), [PRUNE, _heal()], data_dir=data_dir, **OPTS)
    resume = tmp_path / "state"
    step = _heal(resume=str(resume), save_every=4)
    save = heal._save_state

    def save_then_stop(path, done, *args):
        save(path, done, *args)
        if done == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(heal, "_save_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        compress(str(tiny_dir), [PRUNE, step], data_dir=data_dir, **OPTS)
    monkeypatch.setattr(heal, "_save_state", save)
    state = torch.load(resume / "heal_state.pt", weights_only=True)
    assert state["step"] == 4
    # a state written before `windows` was an option continues as the run it was (documents' windows)
    del state["config"]["windows"]
    torch.save(state, resume / "heal_state.pt")
    resumed = compress(str(tiny_dir), [PRUNE, step], data_dir=data_dir, **OPTS)
    assert resumed.steps[-1].resumed_from == 4 and resumed.steps[-1].loss_first == full.steps[-1].loss_first
    assert resumed.steps[-1].loss_curve == pytest.approx(full.steps[-1].loss_curve, rel=1e-4)
    for name in full.masks:
        torch.testing.assert_close(resumed.model.get_submodule(name).weight, full.model.get_submodule(name).weight)
    other = _heal(resume=str(resume), lr=5e-4)
    with pytest.raises(SparsekitError, match="holds a run with other options"):
        compress(str(tiny_dir), [PRUNE, other], data_dir=data_dir, **OPTS)


def test_recipe_order_and_options():
    with pytest.raises(SparsekitError, match="heal before quantizing"):
        Recipe.from_list([PRUNE, {"quantize": {"format": "int4", "group_size": 32}}, _heal()])
    with pytest.raises(SparsekitError, match="heal after pruning"):
        Recipe.from_list([_heal(), PRUNE])
    with pytest.raises(SparsekitError, match="heal: tokens must be an integer >= 64"):
        Heal(tokens=10, seqlen=32, batch_size=2)
    with pytest.raises(SparsekitError, match="heal: lr must be > 0"):
        Heal(lr=0)
    with pytest.raises(SparsekitError, match="heal: squarehead must be >= 0"):
        Heal(squarehead=-1.0)
    with pytest.raises(SparsekitError, match="heal: teacher must be a model name or folder"):
        Heal(teacher="")
    with pytest.raises(SparsekitError, match="heal: windows must be one of documents, packed, got 'docs'"):
        Heal(windows="docs")
    r = Recipe.from_list([PRUNE, _heal(resume="x")])
    assert Recipe.from_yaml(r.to_yaml()) == r and r.steps[1].steps == 8


def test_heal_a_saved_checkpoint_against_a_named_teacher(tiny_dir, data_dir, tmp_path):
    """`teacher:` heals a loaded 2:4 checkpoint (no prune step in this recipe) against the dense model:
    its zeros stay zeros, so 2:4 stays 2:4, and it moves toward that teacher; a teacher with another
    vocabulary is refused before any weight moves."""
    from transformers import AutoModelForCausalLM

    from sparsekit.api import load, save
    from tests.tiny import tiny_model, tiny_tokenizer

    pruned = compress(str(tiny_dir), [PRUNE], data_dir=data_dir, **OPTS)
    save(pruned, tmp_path / "ckpt")
    model, tokenizer = load(tmp_path / "ckpt", dtype="float32")
    kept = {name: model.get_submodule(name).weight != 0 for name in pruned.masks}
    dense = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    ids = torch.randint(3, 250, (2, 32), generator=torch.Generator().manual_seed(0))

    def gap():
        with torch.no_grad():
            return float(distill_loss(model(ids).logits, dense(ids).logits))

    before = gap()
    healed = compress(model, [_heal(teacher=str(tiny_dir))], tokenizer, data_dir=data_dir, **OPTS)
    assert isinstance(healed.steps[-1], HealRecord) and gap() < before
    for name, keep in kept.items():
        w = model.get_submodule(name).weight
        assert bool((w[~keep] == 0).all()) and is_nm(w != 0, 2, 4), name
    other = tmp_path / "other-vocab"
    tiny_model("llama", 0, vocab_size=301).save_pretrained(other)
    tiny_tokenizer().save_pretrained(other)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SparsekitError, match="vocabulary of 301 tokens"):
        compress(model, [_heal(teacher=str(other))], tokenizer, data_dir=data_dir, **OPTS)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("cc") is None, reason="inductor needs a C++ compiler")
def test_compiled_heal_trains_as_the_eager_one(tiny_dir, data_dir):
    """`compile: true` runs the same steps through torch.compile: the same losses and weights up to the rounding
    of fused loops, and the mask kept."""
    eager = compress(str(tiny_dir), [PRUNE, _heal()], data_dir=data_dir, **OPTS)
    compiled = compress(str(tiny_dir), [PRUNE, _heal(compile=True)], data_dir=data_dir, **OPTS)
    assert compiled.steps[-1].loss_curve == pytest.approx(eager.steps[-1].loss_curve, rel=1e-3)
    for name, mask in compiled.masks.items():
        w = compiled.model.get_submodule(name).weight
        assert bool((w[~mask] == 0).all()) and is_nm(mask, 2, 4)
        torch.testing.assert_close(w, eager.model.get_submodule(name).weight, rtol=1e-3, atol=1e-4)
    with pytest.raises(SparsekitError, match="compile must be true or false"):
        Heal(compile="yes")
