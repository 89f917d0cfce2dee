"""Optimisation settings and schedules, all pure functions of the optimizer step.

Every schedule is indexed by optimizer steps (not micro-batches), so gradient accumulation and
resuming cannot move them off course: a resumed run restores the step counter and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass
class OptimConfig:
    """AdamW + schedules (paper defaults: warmup 40 of 300 epochs, 5e-5 -> 1e-3 -> 1e-6)."""

    lr: float = 1e-3
    start_lr: float = 5e-5
    final_lr: float = 1e-6
    warmup_fraction: float = 40 / 300
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    ema_start: float = 0.996
    ema_end: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    loss: Literal["smooth_l1", "l1", "l2"] = "smooth_l1"
    accumulation_steps: int = 1
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        if self.accumulation_steps < 1:
            raise ValueError(f"optim.accumulation_steps={self.accumulation_steps}: expected >= 1")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"optim.warmup_fraction={self.warmup_fraction}: expected in [0, 1)")


@dataclass(frozen=True)
class Schedules:
    """LR, weight decay and EMA momentum at any optimizer step of a run of ``total_steps`` steps."""

    cfg: OptimConfig
    total_steps: int

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total optimizer steps must be >= 1, got {self.total_steps}")

    @property
    def warmup_steps(self) -> int:
        return round(self.cfg.warmup_fraction * self.total_steps)

    def lr(self, step: int) -> float:
        """Linear warmup start_lr -> lr, then cosine lr -> final_lr."""
        c, warm = self.cfg, self.warmup_steps
        if step < warm:
            return c.start_lr + (c.lr - c.start_lr) * step / warm
        progress = min(1.0, (step - warm) / max(1, self.total_steps - warm))
        return c.final_lr + 0.5 * (c.lr - c.final_lr) * (1.0 + math.cos(math.pi * progress))

    def weight_decay(self, step: int) -> float:
        """Cosine from weight_decay to final_weight_decay over the whole run."""
        c = self.cfg
        progress = min(1.0, step / self.total_steps)
        return c.final_weight_decay + 0.5 * (c.weight_decay - c.final_weight_decay) * (
            1.0 + math.cos(math.pi * progress)
        )

    def ema_momentum(self, step: int) -> float:
        """Linear from ema_start to ema_end over all optimizer steps."""
        c = self.cfg
        progress = min(1.0, step / self.total_steps)
        return c.ema_start + (c.ema_end - c.ema_start) * progress
