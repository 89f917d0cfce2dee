"""The pretext task: what the student is trained to predict, and the anti-collapse terms added to the loss.

Configured as the ``pretext:`` section of pretraining configs (``objective:`` in a sweep config is
something else: how a trial is scored).

``target``:

* ``ema`` (Brain-JEPA): layer-normed tokens of the EMA target encoder at the target positions.
  ``optim.ema_start=0 optim.ema_end=0`` makes the target the student's own encoder under
  stop-gradient (no EMA), as LeJEPA trains with SIGReg.
* ``copy``: a sanity task with a fixed answer: the raw target patch itself (the ``patch`` scaled
  frames of each target token, layer-normed over its frames), read out of the predictor by a linear
  head; no target encoder. On data where the answer lies in the context (a correlated ROI at the
  same time patch), a student that routes information from the context beats the position-only
  floor; one that cannot attend stays on it.

``regularizer`` (weighted by ``reg_weight``, on the context encoder's output):

* ``sigreg``: LeJEPA's sketched isotropic-Gaussian regulariser (Epps-Pulley statistic on random
  1-D projections; Balestriero & LeCun, arXiv 2511.08544);
* ``vicreg``: VICReg variance + covariance terms (C-JEPA, arXiv 2410.19560).

``reg_on`` says which embeddings: every context token (``tokens``, at most ``reg_max_rows`` of
them, evenly spaced) or each sample's mean-pooled context (``pooled``: what ``embed`` returns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from brainjepa.regularizers import sigreg_loss, vicreg_loss


@dataclass
class PretextConfig:
    """Prediction target and anti-collapse regulariser of pretraining."""

    target: Literal["ema", "copy"] = "ema"
    regularizer: Literal["none", "sigreg", "vicreg"] = "none"
    reg_weight: float = 0.0
    reg_on: Literal["tokens", "pooled"] = "tokens"
    sigreg_slices: int = 256
    reg_max_rows: int = 4096

    def __post_init__(self) -> None:
        if self.reg_weight < 0:
            raise ValueError(f"pretext.reg_weight={self.reg_weight}: expected >= 0")
        if self.regularizer != "none" and self.reg_weight == 0:
            raise ValueError(
                f"pretext.regularizer={self.regularizer!r} with pretext.reg_weight=0 does nothing; "
                "give a weight (e.g. pretext.reg_weight=0.05) or set pretext.regularizer=none"
            )
        if self.sigreg_slices < 1 or self.reg_max_rows < 2:
            raise ValueError("pretext.sigreg_slices must be >= 1 and pretext.reg_max_rows >= 2")

    @property
    def active(self) -> bool:
        return self.regularizer != "none"


def regularized_rows(context: torch.Tensor, cfg: PretextConfig) -> torch.Tensor:
    """The (rows, D) embeddings the regulariser sees: tokens or per-sample pooled context."""
    if cfg.reg_on == "pooled":
        return context.mean(dim=1)
    rows = context.reshape(-1, context.shape[-1])
    if rows.shape[0] > cfg.reg_max_rows:
        rows = rows[:: -(-rows.shape[0] // cfg.reg_max_rows)]
    return rows


def regularizer_loss(
    context: torch.Tensor, cfg: PretextConfig, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Unweighted regulariser on ``context`` (B, Nc, D) and its parts, for logging."""
    rows = regularized_rows(context, cfg).float()
    if cfg.regularizer == "sigreg":
        value = sigreg_loss(rows, n_slices=cfg.sigreg_slices, generator=generator)
        return value, {"sigreg": float(value.detach())}
    if cfg.regularizer == "vicreg":
        value, terms = vicreg_loss(rows)
        return value, {f"vicreg_{k}": v for k, v in terms.items()}
    raise ValueError(f"unknown regularizer {cfg.regularizer!r}: expected none, sigreg or vicreg")
