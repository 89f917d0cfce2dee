"""Collapse monitors for JEPA training: per-dimension spread and effective rank of representations."""

from __future__ import annotations

import torch


@torch.no_grad()
def collapse_monitors(reps: torch.Tensor, max_rows: int = 2048) -> dict[str, float]:
    """``reps`` (..., D) -> mean per-dimension std and effective rank (Roy & Vetterli 2007).

    A collapsed encoder maps every token to (nearly) the same vector: std -> 0 and rank -> 1.
    At most ``max_rows`` evenly spaced rows are used, so the cost stays small at any batch size.
    """
    x = reps.reshape(-1, reps.shape[-1]).float()
    if x.shape[0] > max_rows:
        x = x[:: -(-x.shape[0] // max_rows)]
    std = x.std(dim=0).mean()
    centred = x - x.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / max(1, x.shape[0] - 1)
    eig = torch.linalg.eigvalsh(cov).clamp_min(0)
    p = eig / eig.sum().clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return {"std": float(std), "rank": float(torch.exp(entropy))}


@torch.no_grad()
def attention_share(maps: list[torch.Tensor], related: torch.Tensor) -> list[float]:
    """Mean attention mass each query puts on ``related`` keys ((N, N) bool), one value per block.

    ``maps`` as from ``BrainEncoder.attention_maps``. Uniform attention gives ``related``'s density
    (the chance level, also returned by ``related.float().mean()``).
    """
    mask = related.to(maps[0].dtype)
    return [float((m * mask).sum(-1).mean()) for m in maps]
