"""Brain gradients: group functional connectivity -> diffusion-map embedding (docs/method.md, gradients).

Margulies et al. 2016; Coifman & Lafon 2006, with BrainSpace's ``GradientMaps(approach='dm')`` as
the reference. Each row of the FC matrix keeps its ``int(R * (1 - sparsity))`` largest entries,
an affinity between rows is built (normalized angle or cosine, negatives zeroed), anisotropic
diffusion (alpha 0.5) normalises it, and the leading non-trivial eigenvectors of the symmetric
conjugate D^-1/2 W D^-1/2 (an exact, deterministic dense eigensolver) give the gradients, scaled by
lambda / (1 - lambda). Gradient sets can be Procrustes-aligned to a reference and are saved as a
versioned :class:`GradientArtifact` (one ``.npz`` file).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
from scipy.linalg import eigh, orthogonal_procrustes
from scipy.sparse.csgraph import connected_components

from brainjepa import __version__

KERNELS = ("normalized_angle", "cosine")
ARTIFACT_FORMAT = "brainjepa.gradients"
ARTIFACT_VERSION = 1
DEFAULT_COMPONENTS = 30  # gradients per artifact unless asked (R-1 for atlases with fewer ROIs)


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


def _one_blas_thread() -> AbstractContextManager:
    """One BLAS thread while the dense linear algebra runs (via threadpoolctl, when installed).

    At R = 1000 one thread is faster than two, bit-for-bit reproducible, and immune to the
    busy-waiting slow-down (10x and more) of multi-threaded OpenBLAS on a loaded machine.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl ships with scikit-learn; without it nothing changes
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def n_kept(n_rois: int, sparsity: float) -> int:
    """Entries kept per row: BrainSpace's ``int(R * (1 - sparsity))`` (39 of 400 at 0.9, by float rounding)."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity={sparsity} must be in [0, 1)")
    k = n_rois if sparsity == 0 else int(n_rois * (1 - sparsity))
    if k < 1:
        raise ValueError(f"sparsity={sparsity} keeps no entry of a {n_rois}-ROI row")
    return k


def sparsify_rows(fc: np.ndarray, sparsity: float = 0.9) -> np.ndarray:
    """Copy of ``fc`` with all but the ``n_kept`` largest entries of each row set to zero."""
    x = np.array(fc, dtype=np.float64)
    r = x.shape[1]
    k = n_kept(r, sparsity)
    if k < r:
        smallest = np.argpartition(x, r - k, axis=1)[:, : r - k]
        np.put_along_axis(x, smallest, 0.0, axis=1)
    return x


def affinity(fc: np.ndarray, kernel: str = "normalized_angle", sparsity: float = 0.9) -> np.ndarray:
    """Row-wise sparsified FC -> symmetric, non-negative affinity between ROIs (as BrainSpace's)."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}: expected normalized_angle or cosine")
    x = sparsify_rows(fc, sparsity)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norm > 0, norm, 1.0)
    cos = np.clip(x @ x.T, -1.0, 1.0)
    if kernel == "cosine":
        return np.clip(cos, 0.0, None)
    return 1.0 - np.arccos(cos) / np.pi


def default_components(n_rois: int) -> int:
    """``DEFAULT_COMPONENTS`` (30), or R-1 for atlases with fewer ROIs (at least 1)."""
    return max(1, min(DEFAULT_COMPONENTS, n_rois - 1))


def check_params(
    n_rois: int, n_components: int, kernel: str = "normalized_angle", sparsity: float = 0.9, alpha: float = 0.5
) -> None:
    """Raise a ValueError naming the parameter when these settings cannot give gradients of ``n_rois``
    ROIs: cheap, so callers check before they compute a group FC matrix."""
    if n_rois < 2:
        raise ValueError(f"gradients need at least 2 ROIs, got {n_rois}")
    if not 1 <= n_components < n_rois:
        raise ValueError(f"n_components={n_components} must be between 1 and R-1={n_rois - 1} for {n_rois} ROIs")
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}: expected normalized_angle or cosine")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha} must be in [0, 1]")
    n_kept(n_rois, sparsity)


def _check_connected(w: np.ndarray) -> None:
    edges = w > 0
    if edges.all():  # the usual case (normalized_angle): skip the graph search
        return
    n, _ = connected_components(edges, directed=False)
    if n > 1:
        raise ValueError(
            f"the affinity graph falls into {n} disconnected parts, so the gradients would only separate "
            "them; use kernel normalized_angle or a lower sparsity"
        )


def _symmetric_operator(w: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Anisotropic normalisation, then D^-1/2 W D^-1/2 and D^-1/2 (to map its eigenvectors back)."""
    if alpha > 0:
        d = w.sum(axis=1) ** -alpha
        w = w * d[:, None] * d[None, :]
    d_half = 1.0 / np.sqrt(w.sum(axis=1))
    sym = w * d_half[:, None] * d_half[None, :]
    return (sym + sym.T) / 2, d_half


def diffusion_map(
    fc: np.ndarray,
    n_components: int = DEFAULT_COMPONENTS,
    kernel: str = "normalized_angle",
    sparsity: float = 0.9,
    alpha: float = 0.5,
) -> GradientResult:
    """Diffusion-map gradients of a connectivity matrix, normalised and signed as BrainSpace does.

    Each right eigenvector of the diffusion operator has Euclidean norm sqrt(R) (the trivial one is
    all ones) before it is scaled by lambda / (1 - lambda); its largest-magnitude entry is positive.
    """
    fc = np.asarray(fc, dtype=np.float64)
    if fc.ndim != 2 or fc.shape[0] != fc.shape[1]:
        raise ValueError(f"connectivity must be a square R x R matrix, got shape {fc.shape}")
    if not np.isfinite(fc).all():
        raise ValueError("connectivity contains NaN or infinite values")
    r = fc.shape[0]
    check_params(r, n_components, kernel, sparsity, alpha)
    with _one_blas_thread():
        w = affinity(fc, kernel, sparsity)
        _check_connected(w)
        sym, d_half = _symmetric_operator(w, alpha)
        vals, vecs = eigh(sym, subset_by_index=[r - n_components - 1, r - 1])
    vals, vecs = vals[::-1], vecs[:, ::-1]
    right = vecs * d_half[:, None]
    right *= np.sqrt(r) / np.linalg.norm(right, axis=0)
    lambdas = vals[1:] / (1.0 - vals[1:])
    grads = right[:, 1:] * lambdas
    signs = np.sign(grads[np.abs(grads).argmax(axis=0), np.arange(n_components)])
    return GradientResult(gradients=grads * signs, eigenvalues=lambdas)


def procrustes_align(gradients: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate ``gradients`` (R, m) onto ``reference`` (R, m): returns (gradients @ Q, Q), Q orthogonal."""
    g, ref = np.asarray(gradients, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if g.ndim != 2 or g.shape != ref.shape:
        raise ValueError(f"cannot align gradients of shape {g.shape} to a reference of shape {ref.shape}")
    q, _ = orthogonal_procrustes(g, ref)
    return g @ q, q


_SCHAEFER = re.compile(r"^\d+Networks_(?:LH|RH)_([A-Za-z]+)")


def network_names(roi_labels: list[str]) -> list[str] | None:
    """Network token of every Schaefer-style label (``17Networks_LH_DefaultA_PFCm_1`` -> ``DefaultA``).

    Returns None unless every label carries one.
    """
    matches = [_SCHAEFER.match(label) for label in roi_labels]
    if not roi_labels or not all(matches):
        return None
    return [m.group(1) for m in matches]


def default_roi_labels(n_rois: int) -> list[str]:
    """Placeholder labels ``roi_0000`` ... for matrices that come without names."""
    return [f"roi_{i:04d}" for i in range(n_rois)]


@dataclass
class GradientParams:
    """How the gradients were computed; ``aligned_to`` names the Procrustes reference, if any."""

    n_components: int = DEFAULT_COMPONENTS
    kernel: str = "normalized_angle"
    sparsity: float = 0.9
    alpha: float = 0.5
    aligned_to: str | None = None


@dataclass
class GradientProvenance:
    """Where the gradients came from: atlas, cohort or source, and which code made them."""

    atlas: str = "unspecified"
    source: str = ""
    cohort: str = ""
    n_scans: int | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    brainjepa_version: str = __version__


def _head(source: str | os.PathLike | IO[bytes], n: int = 6) -> bytes:
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return f.read(n)
    position = source.tell()
    head = source.read(n)
    source.seek(position)
    return head


def _read_npz(source: str | os.PathLike | IO[bytes]) -> dict[str, np.ndarray]:
    head = _head(source)
    if not head.startswith(b"PK"):
        raise ValueError(
            "a single .npy array, not an .npz archive" if head.startswith(b"\x93NUMPY") else "not an .npz (zip) archive"
        )
    with np.load(source, allow_pickle=False) as npz:
        missing = sorted({"gradients", "eigenvalues", "metadata"} - set(npz.files))
        if missing:
            raise KeyError(f"missing {', '.join(missing)}")
        return {key: npz[key] for key in ("gradients", "eigenvalues", "metadata")}


class GradientArtifactError(ValueError):
    """A gradient artifact file is unreadable or inconsistent; the message names the file."""


def _file_name(target: str | os.PathLike | IO[bytes]) -> str:
    if isinstance(target, str | os.PathLike):
        return str(target)
    return str(getattr(target, "name", "<file object>"))


@dataclass
class GradientArtifact:
    """Versioned gradients tied to an atlas and cohort: R x m gradients, m eigenvalues, R ROI labels."""

    gradients: np.ndarray
    eigenvalues: np.ndarray
    roi_labels: list[str]
    params: GradientParams
    provenance: GradientProvenance

    def __post_init__(self) -> None:
        self.gradients = np.asarray(self.gradients, dtype=np.float64)
        self.eigenvalues = np.asarray(self.eigenvalues, dtype=np.float64)
        self.roi_labels = [str(label) for label in self.roi_labels]
        problem = self.shape_problem()
        if problem:
            raise ValueError(f"inconsistent gradient artifact: {problem}")

    def shape_problem(self) -> str | None:
        """Why the parts do not fit together, or None when they do."""
        g, lam = self.gradients, self.eigenvalues
        if g.ndim != 2:
            return f"gradients must be R x m, got shape {g.shape}"
        if lam.shape != (g.shape[1],):
            return f"eigenvalues have shape {lam.shape}, expected ({g.shape[1]},) for {g.shape[1]} gradients"
        if len(self.roi_labels) != g.shape[0]:
            return f"{len(self.roi_labels)} ROI labels for {g.shape[0]} ROIs"
        if self.params.n_components != g.shape[1]:
            return f"params.n_components={self.params.n_components} but {g.shape[1]} gradients"
        if not (np.isfinite(g).all() and np.isfinite(lam).all()):
            return "gradients or eigenvalues contain NaN or infinite values"
        return None

    @property
    def n_rois(self) -> int:
        return self.gradients.shape[0]

    def metadata(self) -> dict[str, Any]:
        """Everything but the arrays, as JSON-ready values."""
        return {
            "format": ARTIFACT_FORMAT,
            "format_version": ARTIFACT_VERSION,
            "roi_labels": self.roi_labels,
            "params": asdict(self.params),
            "provenance": asdict(self.provenance),
        }

    def save(self, target: str | os.PathLike | IO[bytes]) -> None:
        """Write one ``.npz`` (arrays + metadata JSON string); a path is written atomically, as given."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            gradients=self.gradients,
            eigenvalues=self.eigenvalues,
            metadata=np.array(json.dumps(self.metadata())),
        )
        if not isinstance(target, str | os.PathLike):
            target.write(buffer.getvalue())
            return
        path = Path(target)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, path)

    @classmethod
    def load(cls, source: str | os.PathLike | IO[bytes]) -> GradientArtifact:
        """Read and validate an artifact written by :meth:`save` (never unpickles anything)."""
        name = _file_name(source)
        try:
            arrays = _read_npz(source)
            artifact = cls._from_parts(arrays, json.loads(str(arrays["metadata"])))
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise GradientArtifactError(f"{name}: not a valid brainjepa gradient artifact: {exc}") from exc
        return artifact

    @classmethod
    def _from_parts(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> GradientArtifact:
        if meta.get("format") != ARTIFACT_FORMAT or meta.get("format_version") != ARTIFACT_VERSION:
            raise ValueError(
                f"format {meta.get('format')!r} version {meta.get('format_version')!r}, "
                f"expected {ARTIFACT_FORMAT!r} version {ARTIFACT_VERSION}"
            )
        return cls(
            gradients=arrays["gradients"],
            eigenvalues=arrays["eigenvalues"],
            roi_labels=list(meta["roi_labels"]),
            params=GradientParams(**meta["params"]),
            provenance=GradientProvenance(**meta["provenance"]),
        )


def gradient_artifact(
    fc: np.ndarray,
    params: GradientParams,
    provenance: GradientProvenance,
    roi_labels: list[str] | None = None,
    reference: GradientArtifact | None = None,
    reference_name: str | None = None,
) -> GradientArtifact:
    """Diffusion-map gradients of ``fc`` packaged as an artifact, optionally aligned to ``reference``."""
    labels = roi_labels or (reference.roi_labels if reference else default_roi_labels(len(fc)))
    result = diffusion_map(fc, params.n_components, params.kernel, params.sparsity, params.alpha)
    gradients = result.gradients
    if reference is not None:
        _check_reference(reference, labels, result.gradients.shape)
        gradients, _ = procrustes_align(gradients, reference.gradients)
        params = replace(params, aligned_to=reference_name or reference.provenance.source or "reference")
    return GradientArtifact(gradients, result.eigenvalues, labels, params, provenance)


def _check_reference(reference: GradientArtifact, roi_labels: list[str], shape: tuple[int, ...]) -> None:
    if reference.gradients.shape != shape:
        raise ValueError(
            f"alignment reference has {reference.gradients.shape[0]} ROIs x "
            f"{reference.gradients.shape[1]} gradients, these gradients are {shape[0]} x {shape[1]}"
        )
    mismatch = next((i for i, (a, b) in enumerate(zip(roi_labels, reference.roi_labels)) if a != b), None)
    if mismatch is not None:
        raise ValueError(
            f"ROI {mismatch} is {roi_labels[mismatch]!r} here but "
            f"{reference.roi_labels[mismatch]!r} in the alignment reference"
        )
