"""``brainjepa import-checkpoint`` / ``export-checkpoint``: the authors' checkpoints in the registry.

An imported checkpoint becomes a registered model version with the same bundle as a pretraining run
(target encoder, ModelConfig, gradients, ROI labels, robust-scaling statistics, target TR), so
``embed``, ``evaluate`` and fine-tuning use it like any other. The tensor mapping itself is
:mod:`brainjepa.authors_format`.
"""

from __future__ import annotations

import io
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainjepa.authors_format import read_authors_checkpoint, read_gradient_table, write_authors_checkpoint
from brainjepa.gradients import GradientArtifact
from brainjepa.model import ModelConfig
from brainjepa.preprocess import RobustStats
from brainjepa_platform.storage import read_bytes, resolve, write_bytes

DEFAULT_IMPORT_NAME = "brainjepa-encoder-imported"
IMPORT_EXPERIMENT = "brainjepa-imports"  # the MLflow experiment `brainjepa import-checkpoint` logs to
UKB_TR = 0.735
"""UK Biobank's TR: the authors pretrained on UKB windows of 160 frames."""
AUTHORS_SUBCORTICAL = 50
"""Their 450 ROIs are 50 Tian-S3 subcortical ROIs first, then Schaefer-400 (their issue #15)."""


@dataclass
class ImportRequest:
    """What ``brainjepa import-checkpoint`` was asked."""

    checkpoint: str
    gradients: str
    labels: str | None = None
    stats: str | None = None
    tr: float = UKB_TR
    name: str = DEFAULT_IMPORT_NAME
    which: str = "target"
    heads: int = 0
    atlas: str = ""


@dataclass
class ImportResult:
    model_uri: str
    version: str
    config: ModelConfig
    epoch: int
    stats_missing: bool
    seconds: float


def authors_roi_labels(n_rois: int) -> tuple[list[str], str]:
    """ROI labels and atlas name in the authors' order when nothing else is known."""
    if n_rois == 450:
        labels = [f"Tian-S3-{i + 1}" for i in range(AUTHORS_SUBCORTICAL)]
        labels += [f"Schaefer400-{i + 1}" for i in range(n_rois - AUTHORS_SUBCORTICAL)]
        return labels, "Tian-S3+Schaefer-400 (authors' order)"
    return [f"ROI-{i + 1:03d}" for i in range(n_rois)], "unspecified"


def read_gradients(uri: str) -> tuple[torch.Tensor, list[str] | None, str | None]:
    """Their ``gradient_mapping_*.csv`` (R x m, no header) or this project's gradient artifact (.npz,
    which also gives the ROI labels and the atlas)."""
    raw = read_bytes(resolve(uri))
    if uri.endswith(".npz"):
        artifact = GradientArtifact.load(io.BytesIO(raw))
        return torch.from_numpy(artifact.gradients).float(), artifact.roi_labels, artifact.provenance.atlas
    return read_gradient_table(raw.decode()), None, None


def read_roi_labels(uri: str) -> list[str]:
    """One label per line, or an (index, name) table: the ingest's label reader."""
    from brainjepa_platform.data.extract import read_labels

    _, names = read_labels(read_bytes(resolve(uri)).decode(), np.array([]))
    return names


def read_stats(uri: str, n_rois: int) -> RobustStats:
    """An ``.npz`` with per-ROI ``median`` and ``iqr`` arrays."""
    with np.load(io.BytesIO(read_bytes(resolve(uri))), allow_pickle=False) as data:
        missing = {"median", "iqr"} - set(data.files)
        if missing:
            raise ValueError(
                f"{uri}: expected arrays 'median' and 'iqr' (one value per ROI), missing {sorted(missing)}"
            )
        stats = RobustStats(np.asarray(data["median"], np.float64).ravel(), np.asarray(data["iqr"], np.float64).ravel())
    if stats.median.shape != (n_rois,) or stats.iqr.shape != (n_rois,):
        raise ValueError(f"{uri}: {stats.median.size} medians and {stats.iqr.size} IQRs for a model of {n_rois} ROIs")
    return stats


def load_torch_file(uri: str) -> dict[str, Any]:
    """A checkpoint file, read without unpickling code (``weights_only=True``)."""
    raw = read_bytes(resolve(uri))
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise ValueError(f"{uri}: not a checkpoint torch can read safely (weights only): {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{uri}: expected a checkpoint dict, got {type(obj).__name__}")
    return obj


def import_checkpoint(request: ImportRequest, tracking_uri: str | None = None) -> ImportResult:
    """Read their checkpoint, check it, and register its target (or context) encoder as a new version
    of ``request.name`` with the bundle a pretraining run logs, in a run of :data:`IMPORT_EXPERIMENT`
    (``tracking_uri``, default :func:`~brainjepa_platform.tracking.store.default_tracking_uri`)."""
    import mlflow

    from brainjepa_platform.tracking.registry import log_encoder
    from brainjepa_platform.tracking.store import default_tracking_uri, ensure_experiment
    from brainjepa_platform.tracking.uri import using_tracking_uri

    start = time.perf_counter()
    gradients, artifact_labels, artifact_atlas = read_gradients(request.gradients)
    weights = read_authors_checkpoint(load_torch_file(request.checkpoint), gradients, request.which, request.heads)
    n_rois = weights.config.n_rois
    labels, atlas = authors_roi_labels(n_rois)
    if artifact_labels is not None:
        labels, atlas = artifact_labels, artifact_atlas or "unspecified"
    if request.labels:
        labels, atlas = read_roi_labels(request.labels), Path(request.labels).stem
    if len(labels) != n_rois:
        where = request.labels or request.gradients
        raise ValueError(f"{where}: {len(labels)} ROI labels for a model of {n_rois} ROIs")
    atlas = request.atlas or atlas
    stats = read_stats(request.stats, n_rois) if request.stats else None
    uri = tracking_uri or default_tracking_uri()
    experiment_id = ensure_experiment(IMPORT_EXPERIMENT, uri)
    run_name = f"import {Path(request.checkpoint).name}"
    with using_tracking_uri(uri), mlflow.start_run(experiment_id=experiment_id, run_name=run_name):
        mlflow.log_params(
            {
                "source": Path(request.checkpoint).name,
                "which": request.which,
                "epoch": weights.epoch,
                "target_tr": request.tr,
                "stats": "given" if stats is not None else "missing",
                "atlas": atlas,
            }
        )
        version = log_encoder(
            weights.encoder,
            weights.config,
            gradients.numpy(),
            stats,
            labels,
            atlas,
            registered_name=request.name,
            target_tr=request.tr,
        )
    return ImportResult(
        f"models:/{request.name}/{version}",
        version,
        weights.config,
        weights.epoch,
        stats is None,
        time.perf_counter() - start,
    )


def export_checkpoint(source: str, out: str) -> tuple[str, list[str]]:
    """A registered model (``models:/...``, ``runs:/...``: its target encoder) or a pretraining checkpoint
    (``engine.pt``, or its folder: encoder, predictor and target encoder) -> their checkpoint file at
    ``out``. Returns the path and the state dicts written."""
    from brainjepa.config import from_dict

    if source.startswith(("models:/", "runs:/")):
        from brainjepa_platform.tracking.registry import load_encoder

        bundle = load_encoder(source)
        cfg, target, context, predictor = bundle.config, bundle.encoder.state_dict(), None, None
    else:
        path = source if source.endswith(".pt") else f"{source.rstrip('/')}/engine.pt"
        engine = load_torch_file(path)
        if "model" not in engine or "model_config" not in engine:
            raise ValueError(f"{path}: not a brainjepa pretraining checkpoint (no 'model' and 'model_config')")
        cfg, state = from_dict(ModelConfig, engine["model_config"]), engine["model"]

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

        target, context, predictor = part("target_encoder."), part("student.encoder."), part("student.predictor.")
    checkpoint = write_authors_checkpoint(cfg, target, context, predictor)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    write_bytes(resolve(out), buffer.getvalue())
    return out, [k for k in ("encoder", "predictor", "target_encoder") if k in checkpoint]
