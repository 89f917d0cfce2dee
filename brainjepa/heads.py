"""Fine-tuning: a pooled linear head on the encoder, layer-wise learning-rate decay, and the training engine.

``FinetuneModel`` = encoder -> mean over tokens -> LayerNorm -> Linear. ``layerwise_lr_groups`` gives
AdamW parameter groups whose learning rate shrinks with depth from the head (BEiT-style LLRD):

    scale(head: fc_norm + head)              = 1
    scale(encoder block i of L, i = 0..L-1)  = layer_decay ** (L - i)
    scale(encoder final norm)                = layer_decay ** 1    (grouped with the last block)
    scale(patch/positional embeddings)       = layer_decay ** (L + 1)

The encoder's final norm is pretrained encoder weight, so it decays with the last block rather than
taking the head's full rate (BEiT gives it scale 1); then ``layer_decay=0`` freezes the whole
pretrained encoder and trains only the new head. ``FinetuneEngine`` runs AdamW over those groups
with a per-step warmup + cosine schedule that multiplies every group's ``lr_scale``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from brainjepa.jepa import autocast_context
from brainjepa.model import BrainEncoder
from brainjepa.transformer import LAYER_NORM_EPS

Task = Literal["classification", "regression"]
_BLOCK = re.compile(r"^encoder\.blocks\.(\d+)\.")


class FinetuneModel(nn.Module):
    """Encoder + mean-pool over tokens + LayerNorm + Linear: series (B, R, T) -> (B, n_outputs).

    The encoder is trained in place (its ``requires_grad`` is switched on): pass a copy to keep the
    original, e.g. the frozen encoder of an ``EncoderBundle``.
    """

    def __init__(self, encoder: BrainEncoder, n_outputs: int, head_init_std: float = 0.02) -> None:
        super().__init__()
        if n_outputs < 1:
            raise ValueError(f"n_outputs must be >= 1, got {n_outputs}")
        self.encoder = encoder.requires_grad_(True)
        dim = encoder.cfg.dim
        self.fc_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(dim, n_outputs)
        nn.init.trunc_normal_(self.head.weight, std=head_init_std, a=-2 * head_init_std, b=2 * head_init_std)
        nn.init.zeros_(self.head.bias)

    @property
    def n_outputs(self) -> int:
        return self.head.out_features

    def features(self, series: torch.Tensor) -> torch.Tensor:
        """Pooled, normalised representation (B, D) that the linear head reads."""
        return self.fc_norm(self.encoder(series).mean(dim=1))

    def forward(self, series: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(series))


def layer_id(name: str, depth: int) -> int:
    """LLRD layer of a FinetuneModel parameter: 0 embeddings, i + 1 block i (and final norm: L), L + 1 head."""
    match = _BLOCK.match(name)
    if match:
        return int(match.group(1)) + 1
    if name.startswith("encoder.norm."):
        return depth
    if name.startswith("encoder."):
        return 0
    return depth + 1


def layerwise_lr_groups(
    model: FinetuneModel, base_lr: float, layer_decay: float, weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW groups per (layer, decay/no-decay); each carries ``lr_scale``, ``lr`` and ``weight_decay``.

    ``lr_scale = layer_decay ** (L + 1 - layer_id)`` (see the module docstring); biases, norms and
    other 1-D parameters get no weight decay.
    """
    if not 0.0 <= layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in [0, 1], got {layer_decay}")
    depth = len(model.encoder.blocks)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = layer_id(name, depth)
        decay = p.ndim > 1 and not name.endswith(".bias")
        key = (lid, decay)
        if key not in groups:
            scale = layer_decay ** (depth + 1 - lid)
            groups[key] = {
                "name": f"layer_{lid}_{'decay' if decay else 'no_decay'}",
                "layer_id": lid,
                "params": [],
                "param_names": [],
                "lr_scale": scale,
                "lr": base_lr * scale,
                "weight_decay": weight_decay if decay else 0.0,
            }
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]


@dataclass
class FinetuneConfig:
    """AdamW with LLRD; per-step linear warmup to ``lr`` then cosine to ``min_lr``.

    ``epochs``, ``batch_size`` and ``seed`` are for the caller's loop (data order, model init); the
    engine reads the learning-rate, decay and clipping fields.
    """

    lr: float = 1e-3
    min_lr: float = 1e-6
    layer_decay: float = 0.75
    weight_decay: float = 0.05
    epochs: int = 50
    batch_size: int = 32
    warmup_fraction: float = 0.1
    seed: int = 0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction={self.warmup_fraction}: expected in [0, 1)")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")

    def total_steps(self, n_train: int, world_size: int = 1) -> int:
        """Optimizer steps of the run: epochs x batches per epoch (``batch_size`` per worker)."""
        return self.epochs * max(1, math.ceil(n_train / (self.batch_size * world_size)))


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, peak: float, floor: float) -> float:
    """Linear warmup (step k < w: peak * (k + 1) / (w + 1)), peak at step w, cosine to ``floor`` at ``total_steps``."""
    if step < warmup_steps:
        return peak * (step + 1) / (warmup_steps + 1)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def _tensor(x: Any, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device=device, dtype=dtype) if dtype is not None else t.to(device)


class FinetuneEngine:
    """AdamW over the LLRD groups of ``model``, the schedule, and the task loss.

    Classification: cross-entropy on logits, targets are class indices 0..n_outputs-1. Regression:
    MSE on targets standardised with :meth:`set_target_scaling` (mean 0, std 1 until called);
    :meth:`predict` returns values in the original units. ``train_module`` is what the forward pass
    runs through (a DDP wrapper of ``model``); parameter groups always come from ``model``.
    """

    def __init__(
        self,
        model: FinetuneModel,
        cfg: FinetuneConfig,
        total_steps: int,
        task: Task,
        n_outputs: int,
        train_module: nn.Module | None = None,
        device: str | torch.device = "cpu",
        dtype: str = "float32",
    ) -> None:
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        if n_outputs != model.n_outputs:
            raise ValueError(f"n_outputs={n_outputs} but the model's head has {model.n_outputs} outputs")
        if task == "classification" and n_outputs < 2:
            raise ValueError("classification needs n_outputs >= 2 (one logit per class)")
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.train_module = train_module if train_module is not None else self.model
        self.cfg, self.task, self.n_outputs, self.dtype = cfg, task, n_outputs, dtype
        self.total_steps = total_steps
        self.warmup_steps = round(cfg.warmup_fraction * total_steps)
        groups = layerwise_lr_groups(model, cfg.lr, cfg.layer_decay, cfg.weight_decay)
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
        self.target_mean = torch.zeros(n_outputs)
        self.target_std = torch.ones(n_outputs)
        self.step = 0

    def lr(self, step: int | None = None) -> float:
        """Base learning rate (the head's) at an optimizer step; group lr = this * lr_scale."""
        step = self.step if step is None else step
        return warmup_cosine(step, self.total_steps, self.warmup_steps, self.cfg.lr, self.cfg.min_lr)

    def set_target_scaling(self, targets: Any) -> None:
        """Regression: standardise targets by the mean/std of these (training) values, per output."""
        values = torch.as_tensor(np.asarray(targets, dtype=np.float64)).reshape(-1, self.n_outputs)
        std = values.std(dim=0, unbiased=False)
        self.target_mean = values.mean(dim=0).float()
        self.target_std = torch.where(std > 0, std, torch.ones_like(std)).float()

    def _loss(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return F.cross_entropy(output, targets.long().reshape(-1))
        mean, std = self.target_mean.to(self.device), self.target_std.to(self.device)
        scaled = (targets.float().reshape(-1, self.n_outputs) - mean) / std
        return F.mse_loss(output, scaled)

    def train_step(self, series: Any, targets: Any) -> float:
        """One AdamW step on a batch; returns the loss (before the step)."""
        base = self.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = base * group["lr_scale"]
        self.train_module.train()
        series = _tensor(series, self.device, torch.float32)
        targets = _tensor(targets, self.device)
        with autocast_context(self.device, self.dtype):
            output = self.train_module(series)
        loss = self._loss(output.float(), targets)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return float(loss.item())

    @torch.no_grad()
    def predict(self, series: Any, batch_size: int = 64) -> np.ndarray:
        """Logits (n, k) for classification; values in original units, (n,) or (n, k), for regression."""
        self.model.eval()
        x = _tensor(series, self.device, torch.float32)
        outputs = []
        for start in range(0, x.shape[0], max(1, batch_size)):
            with autocast_context(self.device, self.dtype):
                outputs.append(self.model(x[start : start + batch_size]).float().cpu())
        out = torch.cat(outputs) if outputs else torch.zeros(0, self.n_outputs)
        if self.task == "regression":
            out = out * self.target_std + self.target_mean
            return out.squeeze(1).numpy() if self.n_outputs == 1 else out.numpy()
        return out.numpy()

    def predict_proba(self, series: Any, batch_size: int = 64) -> np.ndarray:
        """Classification: softmax of the logits, (n, k)."""
        if self.task != "classification":
            raise ValueError("predict_proba is for classification")
        logits = torch.from_numpy(self.predict(series, batch_size))
        return torch.softmax(logits, dim=1).numpy()

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "total_steps": self.total_steps,
            "task": self.task,
            "config": asdict(self.cfg),
            "target_mean": self.target_mean.clone(),
            "target_std": self.target_std.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["task"] != self.task or state["total_steps"] != self.total_steps:
            raise ValueError(
                f"checkpoint is for task={state['task']!r}, total_steps={state['total_steps']}; "
                f"this engine has task={self.task!r}, total_steps={self.total_steps}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.target_mean = state["target_mean"].clone()
        self.target_std = state["target_std"].clone()
