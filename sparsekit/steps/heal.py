"""Healing by distillation: the compressed model (student) learns the next-token distributions of the model
as it entered the recipe (teacher) on C4 windows, with its sparsity held exactly.

Loss per token (Hinton et al.'s distillation), plus, with `squarehead: w > 0`, SquareHead feature
distillation (Kurtic et al. 2023, "Sparse Fine-tuning for Inference Acceleration of Large Language
Models"; the model card of Sparse-Llama-3.1-8B-2of4 names it as its healing loss):

    L = T^2 * KL( softmax(z_teacher / T) || softmax(z_student / T) )
        + w * sum_l MSE(h_student^l, h_teacher^l) / MSE(h_teacher^l, 0)

over the hidden state after each decoder block l (the last one after the final norm, as the model reports
it). Dividing by the teacher's mean square puts every block on one scale, whatever its activations' size.

- **What trains**: every parameter inside the decoder blocks (projections and norms); embeddings, the
  final norm and the LM head stay frozen (a tied head stays tied to unchanged embeddings).
- **Sparsity kept exactly**: gradients of pruned weights are zeroed before the step and the keep-masks
  are re-applied after it (AdamW's decoupled weight decay is 0, so nothing else could move a zero), so
  every pruned weight is exactly 0 and an N:M mask stays N:M.
- **Schedule**: AdamW, linear warm-up over `warmup` of the steps, then linear decay to 0.
- **Resumable**: with `resume: DIR`, the trainable parameters, the optimizer and the step count are
  written to DIR/heal_state.pt every `save_every` steps (atomically); a later run of the same step
  (same options) continues from there, on the same windows in the same order.
- The forwards run under the calibration settings' autocast (`CalibSettings.forward_dtype`: bf16
  where asked for); master weights, gradients and the optimizer stay fp32.
- **The LM heads inside the loss** (`head_distill_loss`): with a 49k vocabulary the logits of 4 x 512 tokens
  are 400 MB per model in fp32, and the plain loss streams half a dozen such tensors (both softmaxes, the
  KL, their gradients) through memory. Where a model's logits are its output embedding applied to its last
  hidden state (checked on a few tokens, not assumed), the loss applies both heads a slice of tokens at a
  time, so each slice's logits, softmaxes and gradient stay in cache and the full logits never exist.
- **Compiled** (`compile: true`): both models' forwards and the student's backward run through
  `torch.compile` (static shapes: every batch has one), so the norms, activations, casts and residual adds
  fuse into a few loops; the first step pays the compilation (the record's `first_step_seconds`).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from sparsekit.calib.engine import CalibSettings, autocast, module_device
from sparsekit.errors import SparsekitError
from sparsekit.models.adapters import Adapter
from sparsekit.recipe import Heal
from sparsekit.utils.training import lr_factor, masked_step, only_trainable

log = logging.getLogger(__name__)

#: tokens per slice of `head_distill_loss`: 64 x 49,152 fp32 logits are 12.6 MB, so the slice's few live
#: vocabulary-wide tensors fit a 32 MB last-level cache (slices of 32 to 256 tokens timed within 30% of each
#: other on the Zen 4, one thread, with another job running: not a tuned optimum)
HEAD_SLICE = 64


@dataclass
class HealResult:
    seconds: float
    steps: int
    tokens: int
    loss_first: float | None
    loss_last: float | None
    resumed_from: int
    #: mean loss over each tenth of the steps (fewer parts for runs under 10 steps): where the learning stops
    loss_curve: list[float] = dataclasses.field(default_factory=list)
    #: seconds from the start through the first step this run made (setup, and with `compile` the compilation):
    #: `(seconds - first_step_seconds) / (steps - resumed_from - 1)` is the pace of the steps after it
    first_step_seconds: float | None = None


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(teacher || student) of the softened distributions, mean over tokens (fp32)."""
    t = temperature
    s = F.log_softmax(student_logits.float().reshape(-1, student_logits.shape[-1]) / t, dim=-1)
    p = F.log_softmax(teacher_logits.float().reshape(-1, teacher_logits.shape[-1]) / t, dim=-1)
    return F.kl_div(s, p, log_target=True, reduction="batchmean") * t * t


class _HeadDistill(torch.autograd.Function):
    """T^2 * KL(teacher || student) from the last hidden states, one slice of tokens at a time; the gradient
    with respect to the student's hidden states is made in the forward (the heads are frozen, so it is all
    the backward needs): d/dz_s of T^2 KL(p || softmax(z_s / T)) = T (softmax(z_s / T) - p)."""

    @staticmethod
    def forward(ctx, hs: torch.Tensor, ht: torch.Tensor, ws: torch.Tensor, bs: torch.Tensor | None,
                wt: torch.Tensor, bt: torch.Tensor | None, temperature: float, dtype: torch.dtype,
                slice_: int) -> torch.Tensor:
        n, t = hs.shape[0], temperature
        total = torch.zeros((), dtype=torch.float32, device=hs.device)
        grad = torch.empty_like(hs)
        with torch.autocast(hs.device.type, enabled=False):
            # the heads cast once (as autocast would per call), then each slice multiplies exactly as the model's
            # own head does under the same forward dtype
            ws_, wt_ = ws.to(dtype), wt.to(dtype)
            bs_, bt_ = (None if b is None else b.to(dtype) for b in (bs, bt))
            for a in range(0, n, slice_):
                h = hs[a:a + slice_].to(dtype)
                zs = F.linear(h, ws_, bs_).float()
                zt = F.linear(ht[a:a + slice_].to(dtype), wt_, bt_).float()
                if t != 1.0:
                    zs.div_(t)
                    zt.div_(t)
                log_q, log_p = zs.log_softmax(-1), zt.log_softmax(-1)
                del zs, zt
                p = log_p.exp()
                total += torch.dot(p.view(-1), log_p.sub_(log_q).view(-1))
                g = log_q.exp_().sub_(p).mul_(t / n)
                grad[a:a + slice_] = (g.to(dtype) @ ws_).to(grad.dtype)
        ctx.save_for_backward(grad)
        return total * (t * t / n)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None, None, None, None, None, None, None


def head_distill_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, student_head: nn.Linear,
                      teacher_head: nn.Linear, temperature: float = 1.0, dtype: torch.dtype | None = None,
                      slice_: int = HEAD_SLICE) -> torch.Tensor:
    """`distill_loss` of the logits `student_head(student_hidden)` and `teacher_head(teacher_hidden)` (hidden
    states [..., d], matmuls in `dtype`, default the hidden states'), without materialising them; gradients
    flow to `student_hidden` only (the heads must be frozen)."""
    if student_head.weight.requires_grad:
        raise SparsekitError("heal: the fused head loss needs a frozen LM head (it makes no gradient for it)")
    hs = student_hidden.reshape(-1, student_hidden.shape[-1])
    ht = teacher_hidden.reshape(-1, teacher_hidden.shape[-1])
    if hs.shape[0] != ht.shape[0]:
        raise SparsekitError(f"heal: {hs.shape[0]} student tokens against {ht.shape[0]} teacher tokens")
    return _HeadDistill.apply(hs, ht.detach(), student_head.weight.detach(), _bias(student_head),
                              teacher_head.weight.detach(), _bias(teacher_head), float(temperature),
                              dtype or hs.dtype, slice_)


def _bias(head: nn.Linear) -> torch.Tensor | None:
    return None if head.bias is None else head.bias.detach()


def plain_head(model: nn.Module, ids: torch.Tensor, cast: torch.dtype | None) -> nn.Linear | None:
    """`model`'s output embedding when its logits are exactly that layer applied to the last hidden state it
    reports (no soft-capping, scaling or extra head) and its forward can skip the full logits; else None.
    Checked on the first 16 tokens of `ids`, to one bf16 step of the largest logit."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, nn.Linear) or "logits_to_keep" not in inspect.signature(model.forward).parameters:
        return None
    device = module_device(model)
    with torch.no_grad(), autocast(device, cast):
        out = model(input_ids=ids[:1, :16].to(device), use_cache=False, output_hidden_states=True)
        mine = F.linear(out.hidden_states[-1], head.weight, head.bias).float()
    logits = out.logits.float()
    if mine.shape != logits.shape:
        return None
    return head if float((mine - logits).abs().max()) <= 2.0 ** -7 * float(logits.abs().max()) else None


def squarehead_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over blocks of MSE(student, teacher) / MSE(teacher, 0) (fp32): 0 when every hidden state matches."""
    if len(student_hidden) != len(teacher_hidden) or not student_hidden:
        raise SparsekitError(f"heal: squarehead needs as many student as teacher hidden states, got "
                             f"{len(student_hidden)} and {len(teacher_hidden)}")
    terms = [F.mse_loss(s.float(), t.float()) / t.float().pow(2).mean().clamp_min(1e-12)
             for s, t in zip(student_hidden, teacher_hidden)]
    return torch.stack(terms).sum()


def loss_curve(losses: list[float], parts: int = 10) -> list[float]:
    """Mean of each of `parts` consecutive, near-equal slices of `losses` (fewer when there are fewer losses)."""
    parts = min(parts, len(losses))
    if parts == 0:
        return []
    bounds = [round(i * len(losses) / parts) for i in range(parts + 1)]
    return [sum(losses[a:b]) / (b - a) for a, b in zip(bounds, bounds[1:])]


def _trainable(adapter: Adapter) -> dict[str, nn.Parameter]:
    prefix = adapter.blocks_path
    return {f"{prefix}.{i}.{name}": p for i, block in enumerate(adapter.blocks) for name, p in block.named_parameters()}


def _state_path(step: Heal) -> Path | None:
    return None if step.resume is None else Path(step.resume) / "heal_state.pt"


def run_heal(model: nn.Module, teacher: nn.Module, adapter: Adapter, step: Heal, masks: dict[str, torch.Tensor],
             windows: Callable[..., torch.Tensor], *, settings: CalibSettings | None = None,
             progress: bool = True) -> HealResult:
    """Distil `teacher` into `model` (in place) under `step`'s budget; `masks`: keep-masks by module name
    (a module's weight keeps exactly its zeros); `windows(n, seqlen, seed, packed)`: n token windows of C4
    (packed: every document joined and cut in turn, `sparsekit.data.packed_windows`)."""
    start = time.perf_counter()
    settings = settings or CalibSettings()
    device = module_device(model)
    params = _trainable(adapter)
    keep: dict[str, torch.Tensor] = {}
    for name, mask in masks.items():
        key = f"{name}.weight"
        if key in params:
            if tuple(mask.shape) != tuple(params[key].shape):
                raise SparsekitError(f"heal: the mask of {name} has shape {tuple(mask.shape)} but its weight "
                                     f"{tuple(params[key].shape)}")
            keep[key] = mask.to(device=device, dtype=params[key].dtype)
    total = step.steps
    ids = windows(total * step.batch_size, step.seqlen, step.seed, step.windows == "packed")
    # fused: one loop over every parameter instead of a dozen elementwise passes over each (AdamW was 4% of a step)
    opt = torch.optim.AdamW(list(params.values()), lr=step.lr, weight_decay=0.0,
                            fused=device.type in ("cpu", "cuda"))
    config = dataclasses.asdict(step)
    config.pop("resume")
    config.pop("compile")  # how the forwards run, not what is trained: a resumed run may change it
    # the loss of one batch is noisy: the record keeps means over the first and the last tenth of the steps and
    # over each tenth (the curve); the resume state holds every step's loss so a resumed run reports the same
    tenth = max(1, total // 10)
    begin, losses, first_step = 0, [], None
    state_path = _state_path(step)
    if state_path is not None and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        if "losses" not in state:
            raise SparsekitError(f"heal: {state_path} was written by an older sparsekit (no per-step losses); use "
                                 "another resume folder or delete it")
        # an option added since the state was written counts at its default (the run it continues had that)
        saved = {**{f.name: f.default for f in dataclasses.fields(step) if f.name in config}, **state["config"]}
        if saved != config:
            raise SparsekitError(f"heal: {state_path} holds a run with other options ({state['config']}); use "
                                 "another resume folder or delete it")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state["params"][name])
        opt.load_state_dict(state["optimizer"])
        begin, losses = int(state["step"]), list(state["losses"])
    cast = settings.autocast_dtype(device)
    features = step.squarehead > 0
    teacher.eval()
    model.train(False)  # no dropout: the student is trained as it will run
    heads = (plain_head(model, ids, cast), plain_head(teacher, ids, cast)) if total > begin else (None, None)
    fused = heads[0] is not None and heads[1] is not None  # the head is not a block's: frozen while healing
    log.info("heal: %s", "the LM heads applied inside the loss, a slice of tokens at a time" if fused else
             "the loss on the models' full logits (a head that is not a plain linear layer of the last hidden state)")
    kwargs = {"use_cache": False, "output_hidden_states": features or fused, **({"logits_to_keep": 1} if fused else {})}
    # every batch has one shape: static graphs, compiled once at the first step
    student, target_model = ((torch.compile(m, dynamic=False) for m in (model, teacher)) if step.compile
                             else (model, teacher))
    bar = tqdm(range(begin, total), desc="healing", unit="step", disable=not progress, initial=begin, total=total)
    with only_trainable(model, params.values()):
        for k in bar:
            batch = ids[k * step.batch_size:(k + 1) * step.batch_size].to(device)
            for group in opt.param_groups:
                group["lr"] = step.lr * lr_factor(k, total, step.warmup)
            with torch.no_grad(), autocast(device, cast):
                target = target_model(input_ids=batch, **kwargs)
            with torch.enable_grad(), autocast(device, cast):
                out = student(input_ids=batch, **kwargs)
                if fused:
                    loss = head_distill_loss(out.hidden_states[-1], target.hidden_states[-1], heads[0], heads[1],
                                             step.temperature, cast)
                else:
                    loss = distill_loss(out.logits, target.logits, step.temperature)
                if features:  # hidden_states[0] is the embedding output: frozen, the same in both models
                    loss = loss + step.squarehead * squarehead_loss(out.hidden_states[1:], target.hidden_states[1:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            masked_step(opt, params, keep)
            value = float(loss.detach())  # waits for the step: the clock below reads a finished step
            losses.append(value)
            if first_step is None:
                first_step = time.perf_counter() - start
            bar.set_postfix(loss=f"{value:.4f}")
            if state_path is not None and ((k + 1) % step.save_every == 0 or k + 1 == total):
                _save_state(state_path, k + 1, params, opt, config, losses)
    mean = (lambda xs: sum(xs) / len(xs) if xs else None)
    return HealResult(time.perf_counter() - start, total, total * step.batch_size * step.seqlen, mean(losses[:tenth]),
                      mean(losses[-tenth:]), begin, loss_curve(losses), first_step)


def _save_state(path: Path, done: int, params: dict[str, nn.Parameter], opt: torch.optim.Optimizer, config: dict,
                losses: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"step": done, "params": {n: p.detach().cpu() for n, p in params.items()},
                "optimizer": opt.state_dict(), "config": config, "losses": losses}, tmp)
    os.replace(tmp, path)
