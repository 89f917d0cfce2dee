"""Shared fixtures: seeded tiny model configs and synthetic cohorts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainjepa.model import ModelConfig

torch.set_num_threads(2)


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return ModelConfig(size="tiny", n_rois=23, frames=48, patch=8, n_gradients=5)


@pytest.fixture
def tiny_gradients(tiny_cfg: ModelConfig) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.standard_normal((tiny_cfg.n_rois, 6))).float()
