"""Synthetic, network-structured BOLD-like ROI time series for tests, benchmarks and the demo.

ROIs belong to networks; each network follows a slow latent signal (AR(1), like band-limited BOLD)
and each subject's ``coupling`` phenotype mixes one network pair's signals, so phenotypes are known
functions of connectivity. :func:`fingerprint_cohort` draws several scans per subject whose identity
lies only in the structure of the dynamics (subject fingerprinting, ``cohesion`` phenotype).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SyntheticCohort:
    """``series[i]`` is scan i's (R, T_i) series sampled every ``tr[i]`` seconds.

    ``phenotypes[k][i]`` belongs to scan i. Cohorts with several scans per subject also give each scan's
    ``subject`` index and ``session`` number (both ``None`` for :func:`synthetic_cohort`: one scan per subject).
    """

    series: list[np.ndarray]
    tr: np.ndarray
    network: np.ndarray
    phenotypes: dict[str, np.ndarray] = field(default_factory=dict)
    subject: np.ndarray | None = None
    session: np.ndarray | None = None


def _latent(n_networks: int, n_frames: int, tr: float, rng: np.random.Generator) -> np.ndarray:
    """AR(1) latent signals with a ~10 s time constant, unit variance."""
    phi = np.exp(-tr / 10.0)
    z = np.empty((n_networks, n_frames))
    z[:, 0] = rng.standard_normal(n_networks)
    noise = rng.standard_normal((n_networks, n_frames)) * np.sqrt(1 - phi**2)
    for t in range(1, n_frames):
        z[:, t] = phi * z[:, t - 1] + noise[:, t]
    return z


def synthetic_cohort(
    n_subjects: int,
    n_rois: int,
    n_frames: int | tuple[int, int] = 200,
    tr: float | tuple[float, ...] = 2.0,
    n_networks: int = 7,
    noise: float = 0.6,
    seed: int = 0,
) -> SyntheticCohort:
    """Draw a cohort; ``n_frames`` may be a (low, high) range and ``tr`` a set of TRs to pick from."""
    if n_networks < 3 or n_rois < n_networks:
        raise ValueError(f"synthetic cohort needs >= 3 networks and >= 1 ROI per network, got {n_networks}, {n_rois}")
    rng = np.random.default_rng(seed)
    network = np.arange(n_rois) * n_networks // n_rois
    loading = 0.6 + 0.4 * rng.random(n_rois)
    trs = np.atleast_1d(np.asarray(tr, dtype=float))
    coupling = rng.uniform(-0.8, 0.8, n_subjects)
    age = 20 + 50 * rng.random(n_subjects)
    series, scan_tr = [], []
    for i in range(n_subjects):
        t_i = trs[rng.integers(len(trs))]
        frames = n_frames if isinstance(n_frames, int) else int(rng.integers(n_frames[0], n_frames[1] + 1))
        z = _latent(n_networks, frames, t_i, rng)
        z[1] = coupling[i] * z[0] + np.sqrt(1 - coupling[i] ** 2) * z[1]  # phenotype sets FC(net0, net1)
        z[2] *= 0.5 + age[i] / 70  # age scales one network's amplitude
        x = loading[:, None] * z[network] + noise * rng.standard_normal((n_rois, frames))
        series.append((100.0 + 5.0 * x).astype(np.float32))
        scan_tr.append(t_i)
    phenotypes = {"coupling": coupling, "age": age, "sex": (rng.random(n_subjects) < 0.5).astype(np.int64)}
    return SyntheticCohort(series=series, tr=np.asarray(scan_tr), network=network, phenotypes=phenotypes)


def _ar1(shape: tuple[int, ...], tr: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary unit-variance AR(1) signals along the last axis (~10 s time constant), vectorised."""
    phi = np.exp(-tr / 10.0)
    z = rng.standard_normal((shape[-1], *shape[:-1]))  # time-major; z[0] is already stationary
    z[1:] *= np.sqrt(1 - phi**2)
    for t in range(1, len(z)):  # loop over time only; every series at once
        z[t] += phi * z[t - 1]
    return np.moveaxis(z, 0, -1)


def fingerprint_cohort(
    n_subjects: int,
    n_rois: int,
    scans_per_subject: int = 2,
    n_frames: int = 200,
    tr: float = 2.0,
    n_networks: int = 7,
    noise: float = 0.5,
    individuality: float = 1.0,
    cohesion: tuple[float, float] = (0.4, 0.9),
    seed: int = 0,
) -> SyntheticCohort:
    """Draw ``scans_per_subject`` scans (sessions) per subject, each with its own stable connectivity.

    Identity: subject s has a fixed K x K mixing ``I + individuality * H_s`` of K independent AR(1)
    network latents and fixed ROI cross-loadings ``individuality * G_s`` onto all networks (H_s, G_s
    standard normal / sqrt(K)). ROI r's network signal is ``u_r . z`` with ``u_r`` the unit-norm row r of
    ``onehot(network) @ (I + individuality * H_s) + individuality * G_s``, so it has unit variance for
    every ROI and subject: identity lies only in the correlation structure. Each scan draws fresh latents
    and noise.

    Cohesion: subject s's ``c_s ~ U(cohesion)`` is the share of each ROI's BOLD variance that comes from
    its network signal: ``x_r = sqrt(c_s) u_r . z + sqrt(1 - c_s) p_r + noise * e_r`` with ``p_r`` a
    private AR(1) signal and ``e_r`` white measurement noise. Total ROI variance is ``1 + noise**2`` for
    every ROI and subject, so cohesion scales within-network correlation (expected
    ``c_s * u_r . u_r' / (1 + noise**2)``), not amplitude. ``phenotypes["cohesion"]`` holds ``c_s`` for
    each scan (constant within a subject).

    Mean and amplitude carry no identity: stored series are ``base_r + offset + 5 * gain * x`` with a
    cohort-wide per-ROI baseline and a fresh per-scan offset and per-ROI gain (session effects).
    Scans are ordered subject-major: scan ``i`` is subject ``i // scans_per_subject``, session
    ``i % scans_per_subject``.
    """
    if n_networks < 2 or n_rois < n_networks:
        raise ValueError(f"fingerprint cohort needs >= 2 networks and >= 1 ROI per network, got {n_networks}, {n_rois}")
    if n_subjects < 1 or scans_per_subject < 1 or n_frames < 2:
        raise ValueError(
            f"need >= 1 subject, >= 1 scan per subject and >= 2 frames, got "
            f"{n_subjects}, {scans_per_subject}, {n_frames}"
        )
    lo, hi = cohesion
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"cohesion must be a (low, high) range inside [0, 1], got {cohesion}")
    if noise < 0 or individuality < 0 or tr <= 0:
        raise ValueError(f"noise and individuality must be >= 0 and tr > 0, got {noise}, {individuality}, {tr}")
    rng = np.random.default_rng(seed)
    n_sub, n_scan, k = n_subjects, n_subjects * scans_per_subject, n_networks
    network = np.arange(n_rois) * k // n_rois
    onehot = np.eye(k)[network]  # (R, K)
    mixing = np.eye(k) + individuality * rng.standard_normal((n_sub, k, k)) / np.sqrt(k)
    cross = individuality * rng.standard_normal((n_sub, n_rois, k)) / np.sqrt(k)
    load = onehot @ mixing + cross  # (S, R, K)
    load /= np.linalg.norm(load, axis=2, keepdims=True)
    c = rng.uniform(lo, hi, n_sub)
    subject = np.repeat(np.arange(n_sub), scans_per_subject)
    session = np.tile(np.arange(scans_per_subject), n_sub)
    z = _ar1((n_scan, k, n_frames), tr, rng)
    private = _ar1((n_scan, n_rois, n_frames), tr, rng)
    white = rng.standard_normal((n_scan, n_rois, n_frames))
    cs = c[subject][:, None, None]
    x = np.sqrt(cs) * (load[subject] @ z) + np.sqrt(1 - cs) * private + noise * white
    base = 100.0 + 20.0 * rng.random(n_rois)
    offset = rng.normal(0.0, 2.0, (n_scan, 1, 1))
    gain = np.exp(0.2 * rng.standard_normal((n_scan, n_rois, 1)))
    series = (base[None, :, None] + offset + 5.0 * gain * x).astype(np.float32)
    return SyntheticCohort(
        series=list(series),
        tr=np.full(n_scan, float(tr)),
        network=network,
        phenotypes={"cohesion": c[subject]},
        subject=subject,
        session=session,
    )
