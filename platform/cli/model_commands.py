"""The typed options of the ``brainjepa`` commands whose library dataclass comes with torch (apart from
:mod:`brainjepa_platform.cli.commands`, so that the data commands do not import torch and MLflow)."""

from __future__ import annotations

from dataclasses import dataclass

from brainjepa.local import LocalPretrainConfig
from brainjepa.masks import MaskConfig
from brainjepa_platform.tracking.authors_checkpoints import ImportRequest


@dataclass(kw_only=True)
class ImportCommand(ImportRequest):
    """``brainjepa import-checkpoint``: :class:`ImportRequest` and the MLflow store to register in."""

    tracking_uri: str = ""
    """Empty: MLFLOW_TRACKING_URI or ./mlflow.db."""


@dataclass(kw_only=True)
class PretrainLocalCommand(LocalPretrainConfig):
    """``brainjepa pretrain-local``: :class:`LocalPretrainConfig` and the folder for what it writes."""

    out: str = "local-output"


@dataclass(kw_only=True)
class MasksCommand(MaskConfig):
    """``brainjepa masks``: :class:`MaskConfig` (``min_context=20``, ``preset=authors``, ...), the token grid
    the masks are drawn on, how many samples are checked, and the outputs."""

    rois: int = 450
    frames: int = 160
    """Frames per window; a multiple of ``patch``."""
    patch: int = 16
    """Frames per time patch."""
    batch: int = 16
    """Samples per drawn batch."""
    samples: int = 300
    """Samples whose masks are checked and summarised."""
    seed: int = 0
    json: bool = False
    """Print JSON only."""
    plot: str | None = None
    """PNG to draw a few samples' masks to; none: no picture."""
