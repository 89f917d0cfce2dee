"""Positional embeddings on the ROI x time-patch token grid (token index = roi * n_time_patches + t).

``GradientPositionalEmbedding`` is Brain Gradient Positioning (docs/method.md): half of the channels
are a fixed 1-D sin-cos code of the time patch, the other half a learned linear map of each ROI's
brain-gradient coordinates, min-max scaled to [-1, 1]. ``SinCosPositionalEmbedding`` is the classic
fixed 2-D sin-cos code by (ROI index, time patch), kept as an ablation.
"""

from __future__ import annotations

import torch
from torch import nn


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Fixed sin-cos code: ``positions`` (N,) -> (N, dim), sin in the first half, cos in the second."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / (10000.0**omega)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def _grid(n_rois: int, n_time_patches: int) -> tuple[torch.Tensor, torch.Tensor]:
    roi = torch.arange(n_rois).repeat_interleave(n_time_patches)
    t = torch.arange(n_time_patches).repeat(n_rois)
    return roi, t


class SinCosPositionalEmbedding(nn.Module):
    """Fixed 2-D sin-cos: concat(sincos(t) [D/2], sincos(roi) [D/2]); no parameters."""

    def __init__(self, n_rois: int, n_time_patches: int, dim: int) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"2-D sin-cos embedding needs dim divisible by 4, got {dim}")
        roi, t = _grid(n_rois, n_time_patches)
        table = torch.cat([sincos_1d(dim // 2, t), sincos_1d(dim // 2, roi)], dim=1)
        self.register_buffer("table", table, persistent=False)

    def forward(self) -> torch.Tensor:
        """(R * P, D) table."""
        return self.table


class GradientPositionalEmbedding(nn.Module):
    """Brain Gradient Positioning: concat(sincos(t) [D/2], scale(G[roi] @ W + b) [D/2]).

    ``gradients`` is the R x m matrix of brain-gradient coordinates (a buffer saved with the model,
    so a checkpoint carries the gradients it was trained with).
    """

    def __init__(self, gradients: torch.Tensor, n_time_patches: int, dim: int) -> None:
        super().__init__()
        if gradients.ndim != 2:
            raise ValueError(f"gradients must be an R x m matrix, got shape {tuple(gradients.shape)}")
        if dim % 4:
            raise ValueError(f"gradient positional embedding needs dim divisible by 4, got {dim}")
        self.n_rois, self.n_gradients = gradients.shape
        self.n_time_patches = n_time_patches
        self.register_buffer("gradients", gradients.detach().float().clone())
        _, t = _grid(1, n_time_patches)
        self.register_buffer("time_code", sincos_1d(dim // 2, t), persistent=False)
        self.proj = nn.Linear(self.n_gradients, dim // 2)

    def forward(self) -> torch.Tensor:
        """(R * P, D) table; differentiable with respect to the gradient projection."""
        roi_code = self.proj(self.gradients)  # (R, D/2)
        lo, hi = roi_code.min(), roi_code.max()
        roi_code = (roi_code - lo) / (hi - lo).clamp_min(1e-6) * 2.0 - 1.0
        r, p = self.n_rois, self.n_time_patches
        roi_part = roi_code[:, None, :].expand(r, p, -1)
        time_part = self.time_code[None, :, :].expand(r, p, -1)
        return torch.cat([time_part, roi_part], dim=-1).reshape(r * p, -1)


def build_positional(
    kind: str, n_rois: int, n_time_patches: int, dim: int, gradients: torch.Tensor | None
) -> nn.Module:
    """Positional module by name: ``gradient`` (needs the R x m matrix) or ``sincos``."""
    if kind == "gradient":
        if gradients is None:
            raise ValueError("positional='gradient' needs a gradients matrix (R x m); pass one or use 'sincos'")
        if gradients.shape[0] != n_rois:
            raise ValueError(f"gradients have {gradients.shape[0]} rows but the model has {n_rois} ROIs")
        return GradientPositionalEmbedding(gradients, n_time_patches, dim)
    if kind == "sincos":
        return SinCosPositionalEmbedding(n_rois, n_time_patches, dim)
    raise ValueError(f"unknown positional embedding {kind!r}: expected 'gradient' or 'sincos'")
