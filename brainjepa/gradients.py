"""Brain gradients: group functional connectivity -> diffusion-map embedding (SPEC section 2).

Margulies et al. 2016; Coifman & Lafon 2006. Rows of the FC matrix are sparsified (top 10% kept),
an affinity between rows is built (normalized angle or cosine), anisotropic diffusion (alpha 0.5)
normalises it, and the leading non-trivial eigenvectors of the symmetric conjugate
D^-1/2 W D^-1/2 (an exact, deterministic dense eigensolver) give the gradients, scaled by
lambda / (1 - lambda).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh


def pearson_fc(series: np.ndarray) -> np.ndarray:
    """ROI x ROI Pearson correlation of one scan's ``series`` (R, T)."""
    x = np.asarray(series, dtype=np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norm > 0, norm, 1.0)
    return np.clip(x @ x.T, -1.0, 1.0)


def group_fc(scans: Iterable[np.ndarray], clip: float = 0.999999) -> np.ndarray:
    """Fisher-z average of per-scan correlation matrices, transformed back to r."""
    total, n = None, 0
    for series in scans:
        z = np.arctanh(np.clip(pearson_fc(series), -clip, clip))
        total = z if total is None else total + z
        n += 1
    if n == 0:
        raise ValueError("group_fc needs at least one scan")
    return np.tanh(total / n)


@dataclass
class GradientResult:
    """R x m gradients (columns ordered by eigenvalue) and their scaled eigenvalues."""

    gradients: np.ndarray
    eigenvalues: np.ndarray


def affinity(fc: np.ndarray, kernel: str = "normalized_angle", sparsity: float = 0.9) -> np.ndarray:
    """Row-wise sparsified FC -> symmetric, non-negative affinity between ROIs."""
    x = np.array(fc, dtype=np.float64)
    if sparsity > 0:
        threshold = np.percentile(x, sparsity * 100, axis=1, keepdims=True)
        x[x < threshold] = 0.0
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norm > 0, norm, 1.0)
    cos = np.clip(x @ x.T, -1.0, 1.0)
    if kernel == "cosine":
        return np.clip(cos, 0.0, None)
    if kernel == "normalized_angle":
        return 1.0 - np.arccos(cos) / np.pi
    raise ValueError(f"unknown kernel {kernel!r}: expected normalized_angle or cosine")


def diffusion_map(
    fc: np.ndarray,
    n_components: int = 30,
    kernel: str = "normalized_angle",
    sparsity: float = 0.9,
    alpha: float = 0.5,
) -> GradientResult:
    """Diffusion-map gradients of a connectivity matrix; signs fixed (largest |entry| positive)."""
    fc = np.asarray(fc)
    if fc.ndim != 2 or fc.shape[0] != fc.shape[1]:
        raise ValueError(f"connectivity must be a square R x R matrix, got shape {fc.shape}")
    r = fc.shape[0]
    if not 1 <= n_components < r:
        raise ValueError(f"n_components={n_components} must be between 1 and R-1={r - 1}")
    w = affinity(fc, kernel, sparsity)
    if alpha > 0:
        d = w.sum(axis=1) ** -alpha
        w = w * d[:, None] * d[None, :]
    d_half = 1.0 / np.sqrt(w.sum(axis=1))
    sym = w * d_half[:, None] * d_half[None, :]
    sym = (sym + sym.T) / 2
    vals, vecs = eigh(sym, subset_by_index=[r - n_components - 1, r - 1])
    vals, vecs = vals[::-1], vecs[:, ::-1]
    psi = vecs / vecs[:, [0]]
    lambdas = vals[1:] / (1.0 - vals[1:])
    grads = psi[:, 1:] * lambdas
    signs = np.sign(grads[np.abs(grads).argmax(axis=0), np.arange(n_components)])
    return GradientResult(gradients=grads * signs, eigenvalues=lambdas)
