"""The typed options of the ``brainjepa`` commands whose library dataclass comes with torch (apart from
:mod:`brainjepa_platform.cli.commands`, so that the data commands do not import torch and MLflow)."""

from __future__ import annotations

from dataclasses import dataclass

from brainjepa.local import LocalPretrainConfig
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
