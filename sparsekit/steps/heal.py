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
"""

from __future__ import annotations

import dataclasses
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


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(teacher || student) of the softened distributions, mean over tokens (fp32)."""
    t = temperature
    s = F.log_softmax(student_logits.float().reshape(-1, student_logits.shape[-1]) / t, dim=-1)
    p = F.log_softmax(teacher_logits.float().reshape(-1, teacher_logits.shape[-1]) / t, dim=-1)
    return F.kl_div(s, p, log_target=True, reduction="batchmean") * t * t


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
    opt = torch.optim.AdamW(list(params.values()), lr=step.lr, weight_decay=0.0)
    config = dataclasses.asdict(step)
    config.pop("resume")
    # the loss of one batch is noisy: the record keeps means over the first and the last tenth of the steps and
    # over each tenth (the curve); the resume state holds every step's loss so a resumed run reports the same
    tenth = max(1, total // 10)
    begin, losses = 0, []
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
    bar = tqdm(range(begin, total), desc="healing", unit="step", disable=not progress, initial=begin, total=total)
    with only_trainable(model, params.values()):
        for k in bar:
            batch = ids[k * step.batch_size:(k + 1) * step.batch_size].to(device)
            for group in opt.param_groups:
                group["lr"] = step.lr * lr_factor(k, total, step.warmup)
            with torch.no_grad(), autocast(device, cast):
                target = teacher(input_ids=batch, use_cache=False, output_hidden_states=features)
            with torch.enable_grad(), autocast(device, cast):
                out = model(input_ids=batch, use_cache=False, output_hidden_states=features)
                loss = distill_loss(out.logits, target.logits, step.temperature)
                if features:  # hidden_states[0] is the embedding output: frozen, the same in both models
                    loss = loss + step.squarehead * squarehead_loss(out.hidden_states[1:], target.hidden_states[1:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            masked_step(opt, params, keep)
            value = float(loss.detach())
            losses.append(value)
            bar.set_postfix(loss=f"{value:.4f}")
            if state_path is not None and ((k + 1) % step.save_every == 0 or k + 1 == total):
                _save_state(state_path, k + 1, params, opt, config, losses)
    mean = (lambda xs: sum(xs) / len(xs) if xs else None)
    return HealResult(time.perf_counter() - start, total, total * step.batch_size * step.seqlen, mean(losses[:tenth]),
                      mean(losses[-tenth:]), begin, loss_curve(losses))


def _save_state(path: Path, done: int, params: dict[str, nn.Parameter], opt: torch.optim.Optimizer, config: dict,
                losses: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"step": done, "params": {n: p.detach().cpu() for n, p in params.items()},
                "optimizer": opt.state_dict(), "config": config, "losses": losses}, tmp)
    os.replace(tmp, path)
