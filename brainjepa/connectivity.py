"""Functional connectivity features: the FC baseline every comparison reports beside the model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

FISHER_CLIP = 1.0 - 1e-7


def _fc_block(block: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(B, R, T) scans of one length -> (B, R*(R-1)/2) Fisher-z upper-triangle correlations."""
    centred = block - block.mean(axis=2, keepdims=True)
    norm = np.sqrt(np.einsum("brt,brt->br", centred, centred))
    z = np.divide(centred, norm[..., None], out=np.zeros_like(centred), where=norm[..., None] > 0)
    corr = np.einsum("brt,bst->brs", z, z)
    return np.arctanh(np.clip(corr[:, rows, cols], -FISHER_CLIP, FISHER_CLIP))


def fc_features(series: Sequence[np.ndarray], dtype: Any = np.float32, chunk: int = 64) -> np.ndarray:
    """Per scan (R, T) -> upper triangle (k=1) of the ROI Pearson correlation matrix, Fisher z.

    Scans may differ in length but not in R; scans of one length are processed together in chunks.
    A constant ROI has correlation 0 with every other ROI (np.corrcoef would give NaN).
    """
    if len(series) == 0:
        raise ValueError("fc_features needs at least one scan")
    n_rois = {np.shape(s)[0] for s in series}
    if len(n_rois) != 1 or any(np.ndim(s) != 2 for s in series):
        raise ValueError(f"every scan must be (R, T) with the same R; got R in {sorted(n_rois)}")
    r = n_rois.pop()
    rows, cols = np.triu_indices(r, k=1)
    out = np.empty((len(series), rows.size), dtype=dtype)
    lengths = np.array([np.shape(s)[1] for s in series])
    for length in np.unique(lengths):
        idx = np.flatnonzero(lengths == length)
        for start in range(0, idx.size, chunk):
            part = idx[start : start + chunk]
            block = np.stack([np.asarray(series[i], dtype=np.float64) for i in part])
            out[part] = _fc_block(block, rows, cols)
    return out
