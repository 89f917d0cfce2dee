"""The encoder bundle: the files that make a trained target encoder usable on raw ROI series.

A bundle holds the target encoder's state dict (read back with ``torch.load(weights_only=True)``), the
ModelConfig, the brain-gradient matrix, the robust-scaling statistics and the ROI labels + atlas (and
the TR the model was trained at), so that the same normalisation is applied at inference as in
training. :class:`EncoderBundle` is the loaded form; ``EncoderBundle.embed`` takes raw series.

This module does not import MLflow (Ray Data actors embed with a bundle); the MLflow model that
carries a bundle is :class:`brainjepa_platform.tracking.registry.EncoderModel`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from brainjepa.config import from_dict, to_dict
from brainjepa.model import BrainEncoder, ModelConfig, state_mismatch
from brainjepa.preprocess import RobustStats
from brainjepa_platform.tracking.params import plain_config, redact

# bundle files (keys of the pyfunc ``artifacts`` mapping = file names without suffix)
STATE_FILE = "encoder_state.pt"
CONFIG_FILE = "model_config.json"
GRADIENTS_FILE = "gradients.npy"
STATS_FILE = "robust_stats.json"
ROIS_FILE = "rois.json"
BUNDLE_FILES = (STATE_FILE, CONFIG_FILE, GRADIENTS_FILE, STATS_FILE, ROIS_FILE)


def _as_numpy(array: Any) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


STATS_MISSING = {
    "missing": True,
    "note": "no robust-scaling statistics (an imported checkpoint): embed with "
    "--scaling dataset, i.e. the statistics of the data being embedded",
}
"""``robust_stats.json`` of a model that came without its pretraining cohort's statistics."""


def as_stats(stats: RobustStats | Mapping[str, Any] | None) -> RobustStats | None:
    """RobustStats from a mapping (None for :data:`STATS_MISSING`); None and RobustStats pass through."""
    if stats is None or isinstance(stats, RobustStats):
        return stats
    return None if dict(stats).get("missing") else RobustStats.from_dict(dict(stats))


def write_config(cfg: Mapping[str, Any] | Any, path: Path) -> Path:
    """Resolved config -> YAML (redacted)."""
    path.write_text(yaml.safe_dump(redact(plain_config(cfg)), sort_keys=False))
    return path


def write_gradients(gradients: Any, path: Path) -> Path:
    np.save(path, _as_numpy(gradients).astype(np.float64), allow_pickle=False)
    return path


def write_stats(stats: RobustStats | Mapping[str, Any] | None, path: Path) -> Path:
    """The statistics as JSON, or :data:`STATS_MISSING` for ``None``."""
    resolved = as_stats(stats)
    path.write_text(json.dumps(STATS_MISSING if resolved is None else resolved.to_dict()))
    return path


def write_rois(roi_labels: list[str], atlas: str, path: Path, target_tr: float | None = None) -> Path:
    """The input spec: atlas, ROI labels in order and (when known) the TR the model was trained at."""
    path.write_text(json.dumps({"atlas": atlas, "labels": [str(x) for x in roi_labels], "target_tr": target_tr}))
    return path


def target_encoder_state(source: Any) -> dict[str, torch.Tensor]:
    """Target-encoder state dict (on CPU) from a PretrainEngine, BrainJEPA, BrainEncoder or a state dict
    (an engine checkpoint, a BrainJEPA state dict or an encoder state dict)."""
    if hasattr(source, "model") and hasattr(source, "optimizer"):  # PretrainEngine
        source = source.model
    if hasattr(source, "target_encoder"):
        source = source.target_encoder
    if isinstance(source, nn.Module):
        state = source.state_dict()
    elif isinstance(source, Mapping):
        state = dict(source.get("model", source))
        prefix = "target_encoder."
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    else:
        raise TypeError(f"cannot take a target encoder from {type(source).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # a DDP-wrapped module's keys
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _check_state(cfg: ModelConfig, gradients: np.ndarray | None, state: Mapping[str, torch.Tensor]) -> None:
    """The state dict must fit ``BrainEncoder(cfg)`` (checked on the meta device: no memory, no init cost)."""
    grads = None if gradients is None or cfg.positional != "gradient" else torch.from_numpy(gradients).float()
    with torch.device("meta"):
        mismatch = state_mismatch(BrainEncoder(cfg, grads).state_dict(), state)
    if mismatch:
        raise ValueError(
            f"encoder state does not fit the model config ({cfg.size}, dim {cfg.dim}, {cfg.n_rois} ROIs, "
            f"{cfg.frames} frames): missing {mismatch.missing[:5]}, unexpected {mismatch.unexpected[:5]}, "
            f"wrong shape {mismatch.wrong_shape[:5]}"
        )


def _check_bundle(
    cfg: ModelConfig, gradients: np.ndarray | None, stats: RobustStats | None, roi_labels: list[str]
) -> None:
    r = cfg.n_rois
    if len(roi_labels) != r:
        raise ValueError(f"model has {r} ROIs but {len(roi_labels)} ROI labels were given")
    if stats is not None:  # None: an imported model without its cohort's statistics
        if stats.median.shape != (r,) or stats.iqr.shape != (r,):
            raise ValueError(
                f"robust stats must hold {r} medians and IQRs, got {stats.median.shape} and {stats.iqr.shape}"
            )
        if not np.all(np.isfinite(stats.iqr)) or np.any(stats.iqr <= 0):
            raise ValueError("robust stats: every IQR must be finite and positive")
    if cfg.positional == "gradient":
        shape = None if gradients is None else gradients.shape
        if shape is None or len(shape) != 2 or shape[0] != r or shape[1] < cfg.n_gradients:
            raise ValueError(f"positional=gradient needs a gradients matrix of {r} x >={cfg.n_gradients}, got {shape}")


def write_bundle(
    directory: Path,
    state: Mapping[str, torch.Tensor],
    model_cfg: ModelConfig,
    gradients: Any,
    stats: RobustStats | Mapping[str, Any] | None,
    roi_labels: list[str],
    atlas: str,
    target_tr: float | None = None,
) -> dict[str, str]:
    """Write the five bundle files into ``directory``; returns the pyfunc ``artifacts`` mapping."""
    stats = as_stats(stats)
    if gradients is None and model_cfg.positional == "gradient":
        gradients = state.get("pos_embed.gradients")  # the buffer the encoder was trained with
    grads = None if gradients is None else _as_numpy(gradients)
    _check_bundle(model_cfg, grads, stats, list(roi_labels))
    _check_state(model_cfg, grads, state)
    torch.save(dict(state), directory / STATE_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(to_dict(model_cfg)))
    write_gradients(grads if grads is not None else np.zeros((model_cfg.n_rois, 0)), directory / GRADIENTS_FILE)
    write_stats(stats, directory / STATS_FILE)
    write_rois(list(roi_labels), atlas, directory / ROIS_FILE, target_tr)
    return {Path(name).stem: str(directory / name) for name in BUNDLE_FILES}


@dataclass
class EncoderBundle:
    """A trained target encoder with everything needed to embed raw ROI time series."""

    encoder: BrainEncoder
    config: ModelConfig
    stats: RobustStats | None
    """The pretraining cohort's robust scaling; None for a model imported without it."""
    roi_labels: list[str]
    atlas: str
    gradients: np.ndarray
    target_tr: float | None = None
    """Seconds between the frames the model was pretrained on (None for bundles that did not record it)."""

    def check_series(self, series: Any) -> np.ndarray:
        """Raw input as a float array (B, R, T), or a ValueError naming the expected shape."""
        cfg = self.config
        expected = f"model expects {cfg.n_rois} ROIs (atlas {self.atlas}) x {cfg.frames} frames"
        try:
            array = np.asarray(series, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{expected}: input is not a numeric array ({exc})") from None
        if array.ndim != 3 or array.shape[1:] != (cfg.n_rois, cfg.frames):
            raise ValueError(
                f"{expected}, as an array of shape (batch, {cfg.n_rois}, {cfg.frames}) of raw ROI series "
                f"resampled to the model's TR; got shape {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{expected}: input contains NaN or infinite values")
        return array

    @torch.inference_mode()
    def embed(self, series: Any, pooling: str = "mean", batch_size: int = 32) -> np.ndarray:
        """Raw series (B, R, T) -> robust-scaled -> target encoder -> (B, D) mean-pooled or (B, R*P, D) tokens."""
        if pooling not in ("mean", "none"):
            raise ValueError(f"pooling must be 'mean' or 'none', got {pooling!r}")
        array = self.check_series(series)
        if self.stats is None:
            raise ValueError(
                f"this model ({self.atlas}) has no robust-scaling statistics of its own (imported "
                "without --stats): scale with the data's, e.g. brainjepa embed --scaling dataset"
            )
        device = next(self.encoder.parameters()).device
        step = max(1, int(batch_size))
        outputs = []
        for start in range(0, array.shape[0], step):
            chunk = torch.from_numpy(self.stats.scale(array[start : start + step])).to(device)
            tokens = self.encoder(chunk)
            outputs.append((tokens.mean(dim=1) if pooling == "mean" else tokens).float().cpu().numpy())
        if not outputs:
            dim = self.config.dim
            shape = (0, dim) if pooling == "mean" else (0, self.config.n_tokens, dim)
            return np.zeros(shape, dtype=np.float32)
        return np.concatenate(outputs)


def read_bundle(paths: Mapping[str, str], device: str | torch.device = "cpu") -> EncoderBundle:
    """Bundle files (keyed as in :func:`write_bundle`) -> :class:`EncoderBundle` with the encoder in eval mode."""
    cfg = from_dict(ModelConfig, json.loads(Path(paths["model_config"]).read_text()))
    gradients = np.load(paths["gradients"], allow_pickle=False)
    stats = as_stats(json.loads(Path(paths["robust_stats"]).read_text()))
    rois = json.loads(Path(paths["rois"]).read_text())
    grads = torch.from_numpy(gradients).float() if cfg.positional == "gradient" else None
    encoder = BrainEncoder(cfg, grads)
    state = torch.load(paths["encoder_state"], map_location="cpu", weights_only=True)
    encoder.load_state_dict(state)
    encoder.to(device).eval().requires_grad_(False)
    return EncoderBundle(
        encoder, cfg, stats, list(rois["labels"]), str(rois["atlas"]), gradients, rois.get("target_tr")
    )
