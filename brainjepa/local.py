"""Single-process pretraining on in-memory scans: the demo, tests and a GPU box without Ray.

The Ray Train path (brainjepa_platform) drives the same ``PretrainEngine`` and sample preparation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from brainjepa.config import section
from brainjepa.gradients import diffusion_map, group_fc
from brainjepa.jepa import BrainJEPA, PretrainEngine
from brainjepa.masks import MaskCollator, MaskConfig
from brainjepa.model import ModelConfig
from brainjepa.preprocess import RobustStats, robust_stats, sample_window
from brainjepa.pretext import PretextConfig
from brainjepa.schedules import OptimConfig
from brainjepa.synthetic import SyntheticCohort, synthetic_cohort


@dataclass
class LocalPretrainConfig:
    """A small single-process pretraining run on a synthetic cohort."""

    model: ModelConfig = section(ModelConfig, size="tiny", n_rois=32, frames=64, patch=8, n_gradients=8)
    masks: MaskConfig = field(default_factory=MaskConfig)
    optim: OptimConfig = section(OptimConfig, lr=2e-3, start_lr=2e-4, warmup_fraction=0.1)
    pretext: PretextConfig = field(default_factory=PretextConfig)
    steps: int = 80
    monitor_every: int = 10
    """Steps between learning monitors (context reliance, position-only floor, effective ranks)."""
    batch_size: int = 16
    subjects: int = 32
    target_tr: float = 2.0
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"


class ScanSampler:
    """Endless, seeded stream of training batches: random window -> robust scaling -> masks."""

    def __init__(
        self,
        scans: list[np.ndarray],
        trs: np.ndarray,
        stats: RobustStats,
        model: ModelConfig,
        masks: MaskConfig,
        batch_size: int,
        target_tr: float,
        seed: int,
    ) -> None:
        self.scans, self.trs, self.stats = scans, trs, stats
        self.model, self.batch_size, self.target_tr = model, batch_size, target_tr
        self.rng = np.random.default_rng([seed, 1])
        self.collator = MaskCollator(masks, model.n_rois, model.n_time_patches, seed=seed)

    def __iter__(self) -> Iterator[dict]:
        while True:
            picks = self.rng.integers(0, len(self.scans), self.batch_size)
            windows = [
                self.stats.scale(sample_window(self.scans[i], self.trs[i], self.target_tr, self.model.frames, self.rng))
                for i in picks
            ]
            masks = self.collator.next_masks(self.batch_size)
            series = torch.from_numpy(np.stack(windows))
            yield {**masks.to_torch(), "series": series, "region_sizes": masks.region_sizes}


def cohort_gradients(scans: list[np.ndarray], n_components: int) -> torch.Tensor:
    """Diffusion-map gradients of the cohort's group FC, as a float tensor (R, m)."""
    return torch.from_numpy(diffusion_map(group_fc(scans), n_components).gradients).float()


def local_pretraining(
    cfg: LocalPretrainConfig, cohort: SyntheticCohort | None = None
) -> Iterator[tuple[PretrainEngine, dict[str, float]]]:
    """Pretrain for ``cfg.steps`` optimizer steps, yielding the engine and the metrics after each."""
    torch.manual_seed(cfg.seed)
    if cohort is None:
        cohort = synthetic_cohort(
            cfg.subjects,
            cfg.model.n_rois,
            n_frames=(cfg.model.frames * 2, cfg.model.frames * 3),
            tr=(cfg.target_tr / 2, cfg.target_tr * 0.8),
            seed=cfg.seed,
        )
    gradients = cohort_gradients(cohort.series, cfg.model.n_gradients) if cfg.model.positional == "gradient" else None
    engine = PretrainEngine(
        BrainJEPA(cfg.model, gradients, cfg.pretext),
        cfg.optim,
        cfg.steps,
        cfg.device,
        cfg.dtype,
        monitor_every=cfg.monitor_every,
    )
    sampler = iter(
        ScanSampler(
            cohort.series,
            cohort.tr,
            robust_stats(cohort.series),
            cfg.model,
            cfg.masks,
            cfg.batch_size,
            cfg.target_tr,
            cfg.seed,
        )
    )
    for _ in range(cfg.steps):
        yield engine, engine.train_step([next(sampler) for _ in range(cfg.optim.accumulation_steps)])


def run_local_pretraining(
    cfg: LocalPretrainConfig,
    cohort: SyntheticCohort | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> tuple[PretrainEngine, list[dict[str, float]]]:
    """Pretrain for ``cfg.steps`` optimizer steps; returns the engine and every step's metrics."""
    history: list[dict[str, float]] = []
    for step in local_pretraining(cfg, cohort):
        history.append(step[1])
        if on_step is not None:
            on_step(step[1])
    return step[0], history
