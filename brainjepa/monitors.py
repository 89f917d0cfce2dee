"""Collapse monitors for JEPA training: per-dimension spread and effective rank of representations."""

from __future__ import annotations

import torch

LEARNING_MONITORS = (
    "context_reliance",
    "floor",
    "loss_over_floor",
    "target_std",
    "target_rank",
    "prediction_std",
    "context_std",
    "context_rank",
)
"""Metrics ``PretrainEngine`` reports on monitored steps (see ``PretrainEngine._learning_monitors``)."""


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


class PositionFloor:
    """The position-only floor: the loss of predicting each target from its position alone.

    Keeps a running mean of the targets seen at each token position (sums and counts decayed by
    ``decay`` per update, ~1/(1-decay) updates of memory, so it follows targets that drift as the
    target encoder trains). ``loss`` scores the current targets against those means *before* they
    are added, so the floor is out of sample. A student whose loss is not clearly below it predicts
    from positions, not from the data in its context. Per process (not reduced under DDP).
    """

    def __init__(self, n_tokens: int, decay: float = 0.98) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay={decay}: expected in (0, 1)")
        self.n_tokens, self.decay = n_tokens, decay
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None

    @torch.no_grad()
    def prediction(self, target_index: torch.Tensor) -> torch.Tensor | None:
        """Mean target at each of ``target_index`` (B, Nt) -> (B, Nt, D); positions never seen get
        the mean over all positions. None before the first update."""
        if self.sums is None or self.counts is None:
            return None
        overall = self.sums.sum(0) / self.counts.sum().clamp_min(1e-12)
        counts = self.counts[target_index][..., None]
        means = self.sums[target_index] / counts.clamp_min(1e-12)
        return torch.where(counts > 0, means, overall)

    @torch.no_grad()
    def update(self, targets: torch.Tensor, target_index: torch.Tensor) -> None:
        """Add ``targets`` (B, Nt, D) seen at ``target_index`` (B, Nt)."""
        flat = targets.detach().reshape(-1, targets.shape[-1]).float()
        index = target_index.reshape(-1)
        if self.sums is None or self.counts is None:
            self.sums = flat.new_zeros(self.n_tokens, flat.shape[1])
            self.counts = flat.new_zeros(self.n_tokens)
        self.sums.mul_(self.decay).index_add_(0, index, flat)
        self.counts.mul_(self.decay).index_add_(0, index, torch.ones_like(index, dtype=flat.dtype))
