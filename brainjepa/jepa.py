"""The JEPA objective and one pretraining step (docs/method.md, "The JEPA objective, with an EMA target").

``BrainJEPA`` holds the context encoder and predictor (the ``student``, which gets gradients and is
what DDP wraps) and the EMA target encoder. ``PretrainEngine`` owns the optimizer and schedules and
runs one optimizer step over ``accumulation_steps`` micro-batches.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from brainjepa.config import from_dict, to_dict
from brainjepa.masks import REGIONS
from brainjepa.model import BrainEncoder, ModelConfig, Predictor, gather_tokens
from brainjepa.monitors import PositionFloor, collapse_monitors
from brainjepa.pretext import PretextConfig, regularizer_loss
from brainjepa.schedules import OptimConfig, Schedules


class JEPAStudent(nn.Module):
    """Context encoder + predictor: series and mask indices -> (context tokens, target predictions).

    ``readout`` (the copy task's linear head from the encoder width to patch values) maps the
    predictions when given.
    """

    def __init__(self, encoder: BrainEncoder, predictor: Predictor, readout: nn.Module | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor
        self.readout = readout

    def forward(
        self, series: torch.Tensor, context_index: torch.Tensor, target_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        context = self.encoder(series, context_index)
        prediction = self.predictor(context, context_index, target_index)
        if self.readout is not None:
            prediction = self.readout(prediction)
        return context, prediction


class BrainJEPA(nn.Module):
    """Student (encoder + predictor) and the EMA target encoder, for the pretext task's target."""

    def __init__(
        self, cfg: ModelConfig, gradients: torch.Tensor | None = None, pretext: PretextConfig | None = None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.pretext = pretext or PretextConfig()
        readout = nn.Linear(cfg.dim, cfg.patch) if self.pretext.target == "copy" else None
        self.student = JEPAStudent(BrainEncoder(cfg, gradients), Predictor(cfg, gradients), readout)
        self.target_encoder = copy.deepcopy(self.student.encoder)
        self.target_encoder.requires_grad_(False)

    @property
    def uses_ema(self) -> bool:
        return self.pretext.target == "ema"

    @torch.no_grad()
    def targets(self, series: torch.Tensor, target_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw targets, layer-normed targets) at ``target_index``: target-encoder tokens, or the
        target patches themselves for the copy task."""
        if self.uses_ema:
            h = gather_tokens(self.target_encoder(series), target_index)
        else:
            h = gather_tokens(series.reshape(series.shape[0], self.cfg.n_tokens, self.cfg.patch), target_index)
        return h, F.layer_norm(h, h.shape[-1:])

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * student encoder."""
        tgt = list(self.target_encoder.parameters())
        src = list(self.student.encoder.parameters())
        torch._foreach_lerp_(tgt, src, 1.0 - momentum)


def jepa_loss(prediction: torch.Tensor, target: torch.Tensor, kind: str = "smooth_l1") -> torch.Tensor:
    """Mean over tokens and channels of smooth-L1 (beta 1), L1 or squared error."""
    if kind == "smooth_l1":
        return F.smooth_l1_loss(prediction, target, beta=1.0)
    if kind == "l1":
        return F.l1_loss(prediction, target)
    if kind == "l2":
        return F.mse_loss(prediction, target)
    raise ValueError(f"unknown loss {kind!r}: expected smooth_l1, l1 or l2")


def parameter_groups(module: nn.Module) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only, none on biases and 1-D parameters."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [
        {"params": decay, "apply_weight_decay": True},
        {"params": no_decay, "apply_weight_decay": False, "weight_decay": 0.0},
    ]


def autocast_context(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """bf16 autocast (no GradScaler needed) or nothing for float32."""
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"unknown dtype {dtype!r}: expected float32 or bf16")


class PretrainEngine:
    """Optimizer, schedules and the JEPA step; checkpointable and resumable at any optimizer step.

    ``student`` may be a DDP wrapper of ``model.student``: then micro-batches before the last of an
    accumulation cycle run under ``no_sync`` so gradients are all-reduced once per optimizer step.
    """

    def __init__(
        self,
        model: BrainJEPA,
        optim: OptimConfig,
        total_steps: int,
        device: str | torch.device = "cpu",
        dtype: str = "float32",
        student: nn.Module | None = None,
        monitor_every: int = 1,
    ) -> None:
        self.model = model.to(device)
        self.device = torch.device(device)
        self.dtype = dtype
        self.optim_cfg = optim
        self.schedules = Schedules(optim, total_steps)
        self.student = student if student is not None else model.student
        self.optimizer = torch.optim.AdamW(parameter_groups(model.student), lr=optim.lr, betas=optim.betas)
        self.monitor_every = monitor_every
        self.floor = PositionFloor(model.cfg.n_tokens)
        self.step = 0  # optimizer steps taken

    @property
    def total_steps(self) -> int:
        return self.schedules.total_steps

    def _apply_schedules(self) -> dict[str, float]:
        lr = self.schedules.lr(self.step)
        wd = self.schedules.weight_decay(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            group["weight_decay"] = wd if group["apply_weight_decay"] else 0.0
        return {"lr": lr, "wd": wd}

    def _micro_step(self, batch: dict[str, Any], scale: float, sync: bool, monitor: bool) -> dict[str, float]:
        series = batch["series"].to(self.device, non_blocking=True)
        context_index = batch["context_index"].to(self.device, non_blocking=True)
        target_index = batch["target_index"].to(self.device, non_blocking=True)
        pretext = self.model.pretext
        out: dict[str, float] = {}
        with autocast_context(self.device, self.dtype):
            raw_targets, targets = self.model.targets(series, target_index)
            no_sync = getattr(self.student, "no_sync", None)
            with contextlib.nullcontext() if sync or no_sync is None else no_sync():
                context, prediction = self.student(series, context_index, target_index)
                loss = jepa_loss(prediction.float(), targets.float(), self.optim_cfg.loss)
                total = loss
                if pretext.active:
                    reg, parts = regularizer_loss(
                        context,
                        pretext,
                        self._regularizer_generator(),
                        context_index,
                        self.model.cfg.n_time_patches,
                    )
                    total = loss + pretext.reg_weight * reg
                    out.update(parts)
                (total * scale).backward()
        out["loss"] = loss.item()
        sizes = batch.get("region_sizes")
        if sizes is not None:
            with torch.no_grad():
                per_token = (prediction.float() - targets.float()).abs().mean(dim=(0, 2))
                for name, part in zip(REGIONS, torch.split(per_token, [int(s) for s in sizes])):
                    if part.numel():  # an empty region (in-block when off) has no loss, not a NaN
                        out[f"l1_{name}"] = part.mean().item()
        if monitor:
            out.update(
                self._learning_monitors(
                    series, context_index, target_index, raw_targets, targets, context, prediction, out["loss"]
                )
            )
        self.floor.update(targets, target_index)
        return out

    @torch.no_grad()
    def _learning_monitors(
        self,
        series: torch.Tensor,
        context_index: torch.Tensor,
        target_index: torch.Tensor,
        raw_targets: torch.Tensor,
        targets: torch.Tensor,
        context: torch.Tensor,
        prediction: torch.Tensor,
        loss: float,
    ) -> dict[str, float]:
        """Does the student learn from its context? (docs/learning.md)

        * ``context_reliance``: loss with every sample's context tokens read from another sample of
          the batch (same positions) minus the true loss; 0 when the predictor ignores the data.
        * ``floor``, ``loss_over_floor``: the position-only floor and the loss's ratio to it.
        * collapse: per-dimension std and effective rank of the raw targets and of the per-sample
          mean-pooled context embeddings across the batch.
        """
        kind = self.optim_cfg.loss
        out: dict[str, float] = {}
        if series.shape[0] > 1:
            with autocast_context(self.device, self.dtype):
                _, swapped = self.model.student(series.roll(1, dims=0), context_index, target_index)
            out["context_reliance"] = jepa_loss(swapped.float(), targets.float(), kind).item() - loss
        floor_prediction = self.floor.prediction(target_index)
        if floor_prediction is not None:
            out["floor"] = jepa_loss(floor_prediction, targets.float(), kind).item()
            out["loss_over_floor"] = loss / max(out["floor"], 1e-12)
        target_stats = collapse_monitors(raw_targets)
        pooled = collapse_monitors(context.float().mean(dim=1))
        out.update(
            target_std=target_stats["std"],
            target_rank=target_stats["rank"],
            prediction_std=collapse_monitors(prediction)["std"],
            context_std=pooled["std"],
            context_rank=pooled["rank"],
        )
        return out

    def _regularizer_generator(self) -> torch.Generator:
        """Random projections drawn alike on every rank: seeded by the optimizer step."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(1_000_003 + self.step)
        return generator

    def train_step(self, micro_batches: Sequence[dict[str, Any]]) -> dict[str, float]:
        """One optimizer step over ``accumulation_steps`` micro-batches; returns averaged metrics."""
        n = len(micro_batches)
        if n != self.optim_cfg.accumulation_steps:
            raise ValueError(f"expected {self.optim_cfg.accumulation_steps} micro-batches, got {n}")
        self.model.student.train()
        metrics = self._apply_schedules()
        # on the first step and on every step numbered (after it) a multiple of monitor_every
        monitor = self.monitor_every > 0 and (self.step == 0 or (self.step + 1) % self.monitor_every == 0)
        parts: list[dict[str, float]] = []
        for i, batch in enumerate(micro_batches):
            parts.append(self._micro_step(batch, 1.0 / n, sync=i == n - 1, monitor=monitor and i == 0))
        if self.optim_cfg.grad_clip > 0:
            metrics["grad_norm"] = float(
                torch.nn.utils.clip_grad_norm_(self.model.student.parameters(), self.optim_cfg.grad_clip)
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        momentum = self.schedules.ema_momentum(self.step)
        if self.model.uses_ema:
            self.model.update_target(momentum)
        self.step += 1
        for key in dict.fromkeys(k for p in parts for k in p):  # a key may be missing from some micro-batches
            values = [p[key] for p in parts if key in p]
            metrics[key] = sum(values) / len(values)
        metrics["ema_momentum"] = momentum
        metrics["step"] = self.step
        return metrics

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "total_steps": self.total_steps,
            "optim": to_dict(self.optim_cfg),
            "model_config": to_dict(self.model.cfg),
            "pretext": to_dict(self.model.pretext),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["total_steps"] != self.total_steps:
            raise ValueError(
                f"checkpoint was made for a run of {state['total_steps']} optimizer steps, this run has "
                f"{self.total_steps}: schedules would not line up"
            )
        if state["optim"] != to_dict(self.optim_cfg):
            raise ValueError("checkpoint optimizer settings differ from this run's optim config")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])

    def save(self, path: str | Path) -> None:
        """Atomic checkpoint write: a reader never sees a partial file."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load(self, path: str | Path) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))


def model_config_from_checkpoint(state: dict[str, Any]) -> ModelConfig:
    """The architecture a checkpoint was trained with."""
    return from_dict(ModelConfig, state["model_config"])
