"""Does pretraining learn? The pieces of the learnability measurements (docs/learning.md).

* ``twin_cohort``: synthetic scans in which every ROI has an exact twin, so the answer of the copy
  task is always in the context when the twin is observed;
* ``encode_scans``: pooled (or per-ROI) encoder features of whole scans, each z-scored per ROI first
  so that amplitude carries no identity;
* ``encode_scan_tokens`` + ``token_correlation``: a second-order read-out, the ROI x ROI correlation
  of each scan's tokens ("FC of the embeddings");
* ``attention_graph``: where each ROI's attention goes, ROI by ROI, per scan;
* ``monitor_summary``: the learning monitors of a run's history, at its start and its end.

``benchmarks/learnability.py`` runs recipes over seeds with these; the tests assert what its table shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from brainjepa.fingerprint import zscore_segments
from brainjepa.model import BrainEncoder
from brainjepa.preprocess import tiling_windows
from brainjepa.synthetic import SyntheticCohort, synthetic_cohort

IQR_OF_UNIT_NORMAL = 1.349
"""A z-scored series divided by this has unit IQR, the scale of the robust scaling the model trains on."""


def twin_cohort(
    n_subjects: int, n_rois: int, n_frames: tuple[int, int], tr: tuple[float, ...], seed: int
) -> SyntheticCohort:
    """``synthetic_cohort`` of ``n_rois // 2`` ROIs with every ROI duplicated (ROIs 2k and 2k+1 equal)."""
    if n_rois % 2:
        raise ValueError(f"a twin cohort needs an even ROI count, got {n_rois}")
    base = synthetic_cohort(n_subjects, n_rois // 2, n_frames=n_frames, tr=tr, seed=seed)
    return SyntheticCohort(
        series=[np.repeat(s, 2, axis=0) for s in base.series],
        tr=base.tr,
        network=np.repeat(base.network, 2),
        phenotypes=base.phenotypes,
    )


def scan_windows(scan: np.ndarray, tr: float, target_tr: float, frames: int) -> torch.Tensor:
    """One (R, T) scan z-scored per ROI over its whole length, on the robust-scaling scale, as tiling windows."""
    scaled = zscore_segments(scan)[0] / IQR_OF_UNIT_NORMAL
    return torch.from_numpy(tiling_windows(scaled, tr, target_tr, frames)).float()


@torch.no_grad()
def encode_scans(
    encoder: BrainEncoder,
    scans: Sequence[np.ndarray],
    trs: Sequence[float],
    target_tr: float,
    per_roi: bool = False,
    batch_size: int = 64,
) -> np.ndarray:
    """(n_scans, D) mean-pooled tokens, or (n_scans, R * D) tokens pooled over time per ROI.

    Each scan is z-scored per ROI over its whole length (then put on the robust-scaling scale), cut
    into tiling windows at ``target_tr``, encoded, and pooled over tokens and windows.
    """
    cfg = encoder.cfg
    device = next(encoder.parameters()).device
    encoder.eval()
    features = []
    for scan, tr in zip(scans, trs):
        windows = scan_windows(scan, tr, target_tr, cfg.frames)
        parts = []
        for chunk in windows.split(batch_size):
            tokens = encoder(chunk.to(device)).float()  # (k, R * P, D)
            if per_roi:
                tokens = tokens.reshape(len(chunk), cfg.n_rois, cfg.n_time_patches, -1).mean(dim=2).flatten(1)
            else:
                tokens = tokens.mean(dim=1)
            parts.append(tokens.sum(dim=0))
        features.append((torch.stack(parts).sum(dim=0) / len(windows)).cpu().numpy())
    return np.stack(features)


@torch.no_grad()
def encode_scan_tokens(
    encoder: BrainEncoder,
    scans: Sequence[np.ndarray],
    trs: Sequence[float],
    target_tr: float,
    batch_size: int = 64,
) -> list[np.ndarray]:
    """Per scan, the encoder's tokens as (R, W * P, D): every ROI's tokens over the time patches of its windows.

    Scans are scaled and windowed as in ``encode_scans``; the time axis runs over windows, then patches.
    """
    cfg = encoder.cfg
    device = next(encoder.parameters()).device
    encoder.eval()
    out = []
    for scan, tr in zip(scans, trs):
        windows = scan_windows(scan, tr, target_tr, cfg.frames)
        parts = [
            encoder(chunk.to(device)).float().reshape(len(chunk), cfg.n_rois, cfg.n_time_patches, -1)
            for chunk in windows.split(batch_size)
        ]
        tokens = torch.cat(parts).permute(1, 0, 2, 3)  # (R, W, P, D)
        out.append(tokens.reshape(cfg.n_rois, -1, tokens.shape[-1]).cpu().numpy())
    return out


@torch.no_grad()
def attention_graph(
    encoder: BrainEncoder, scans: Sequence[np.ndarray], trs: Sequence[float], target_tr: float, batch_size: int = 16
) -> list[np.ndarray]:
    """Per scan, the (R, R) share of ROI r's attention that goes to ROI s: where the encoder routes information.

    Scans are scaled and windowed as in ``encode_scans``; the attention probabilities of every block and head
    (``BrainEncoder.attention_maps``) are summed over the key ROI's time patches and averaged over blocks,
    heads, the query's time patches and windows, so each row sums to 1. A subject's own relations between
    ROIs can show here even when the tokens' values do not carry them.
    """
    cfg = encoder.cfg
    device = next(encoder.parameters()).device
    r, p = cfg.n_rois, cfg.n_time_patches
    encoder.eval()
    out = []
    for scan, tr in zip(scans, trs):
        windows = scan_windows(scan, tr, target_tr, cfg.frames)
        total = torch.zeros(r, r, dtype=torch.float64)
        for chunk in windows.split(batch_size):
            for weights in encoder.attention_maps(chunk.to(device)):  # (k, heads, N, N)
                by_roi = weights.double().reshape(*weights.shape[:2], r, p, r, p).sum(dim=-1).mean(dim=3)
                total += by_roi.sum(dim=(0, 1)).cpu()  # (R query, R key)
        out.append((total / (len(windows) * len(encoder.blocks) * cfg.heads)).numpy())
    return out


def token_correlation(tokens: np.ndarray, over_time: bool = True) -> np.ndarray:
    """Upper triangle (k=1, row-major) of the ROI x ROI Pearson correlation of one scan's (R, T, D) tokens.

    ``over_time=True`` ("FC of the embeddings"): each ROI's tokens minus their mean over time, flattened
    to T * D values, correlated between ROIs; ROIs whose tokens co-fluctuate correlate. ``over_time=False``:
    each ROI's tokens averaged over time (a D-vector) and correlated between ROIs across the D dimensions
    (how similar the ROIs' mean embeddings are). A constant row correlates 0 with everything.
    """
    x = np.asarray(tokens, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError(f"tokens must be (n_rois >= 2, T, D), got shape {x.shape}")
    x = (x - x.mean(axis=1, keepdims=True)).reshape(len(x), -1) if over_time else x.mean(axis=1)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norm > 0, norm, 1.0)
    return (x @ x.T)[np.triu_indices(len(x), k=1)]


def monitor_summary(history: Sequence[dict[str, float]], tail: int = 3) -> dict[str, float]:
    """Learning monitors at the end of a run (mean of the last ``tail`` monitored steps) and at its start.

    Keys: ``loss_over_floor``, ``context_reliance``, ``target_rank``, ``context_rank`` (end) and
    ``target_rank_start``, ``context_rank_start`` (first monitored step).
    """
    monitored = [h for h in history if "context_reliance" in h and "loss_over_floor" in h]
    if not monitored:
        raise ValueError("the history has no monitored step with a position-only floor: lower monitor_every")
    end = monitored[-tail:]
    out = {
        k: float(np.mean([h[k] for h in end]))
        for k in ("loss_over_floor", "context_reliance", "target_rank", "context_rank")
    }
    first = next(h for h in history if "target_rank" in h)
    out["target_rank_start"], out["context_rank_start"] = first["target_rank"], first["context_rank"]
    return out
