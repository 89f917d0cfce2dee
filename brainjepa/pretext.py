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
them, evenly spaced), each sample's mean-pooled context (``pooled``: what ``embed`` returns), or
every context token minus the mean of its sample's context tokens at the same time patch
(``roi_centred``, at most ``reg_max_rows``): what all ROIs share at a time drops out, so the term
keeps the tokens of different ROIs apart at each time, which ``tokens`` and ``pooled`` do not (an
encoder that gives every ROI the same token at a time keeps its rank across the batch).
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
    reg_on: Literal["tokens", "pooled", "roi_centred"] = "tokens"
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


def roi_centred_tokens(context: torch.Tensor, context_index: torch.Tensor, n_time_patches: int) -> torch.Tensor:
    """(B, Nc, D) context tokens minus the mean of the same sample's context tokens at their time patch.

    Token index n is ROI ``n // n_time_patches`` at time patch ``n % n_time_patches``.
    """
    batch, n_context, dim = context.shape
    group = (context_index % n_time_patches) + n_time_patches * torch.arange(batch, device=context.device)[:, None]
    group = group.flatten()
    flat = context.reshape(-1, dim)
    sums = flat.new_zeros(batch * n_time_patches, dim).index_add(0, group, flat)
    counts = flat.new_zeros(batch * n_time_patches).index_add(0, group, torch.ones_like(group, dtype=flat.dtype))
    return (flat - sums[group] / counts[group, None]).reshape(batch, n_context, dim)


def regularized_rows(
    context: torch.Tensor,
    cfg: PretextConfig,
    context_index: torch.Tensor | None = None,
    n_time_patches: int | None = None,
) -> torch.Tensor:
    """The (rows, D) embeddings the regulariser sees: tokens, per-sample pooled context or ROI-centred tokens.

    ``roi_centred`` needs the tokens' ``context_index`` (B, Nc) and the model's ``n_time_patches``.
    """
    if cfg.reg_on == "pooled":
        return context.mean(dim=1)
    if cfg.reg_on == "roi_centred":
        if context_index is None or n_time_patches is None:
            raise ValueError("pretext.reg_on=roi_centred needs the context tokens' indices and n_time_patches")
        context = roi_centred_tokens(context, context_index, n_time_patches)
    rows = context.reshape(-1, context.shape[-1])
    if rows.shape[0] > cfg.reg_max_rows:
        rows = rows[:: -(-rows.shape[0] // cfg.reg_max_rows)]
    return rows


def regularizer_loss(
    context: torch.Tensor,
    cfg: PretextConfig,
    generator: torch.Generator | None = None,
    context_index: torch.Tensor | None = None,
    n_time_patches: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Unweighted regulariser on ``context`` (B, Nc, D) and its parts, for logging."""
    rows = regularized_rows(context, cfg, context_index, n_time_patches).float()
    if cfg.regularizer == "sigreg":
        value = sigreg_loss(rows, n_slices=cfg.sigreg_slices, generator=generator)
        return value, {"sigreg": float(value.detach())}
    if cfg.regularizer == "vicreg":
        value, terms = vicreg_loss(rows)
        return value, {f"vicreg_{k}": v for k, v in terms.items()}
    raise ValueError(f"unknown regularizer {cfg.regularizer!r}: expected none, sigreg or vicreg")
