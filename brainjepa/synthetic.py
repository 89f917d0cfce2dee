"""Synthetic, network-structured BOLD-like ROI time series for tests, benchmarks and the demo.

ROIs belong to networks; each network follows a slow latent signal (AR(1), like band-limited BOLD)
and each subject's ``coupling`` phenotype mixes one network pair's signals, so phenotypes are known
functions of connectivity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SyntheticCohort:
    """``series[i]`` is subject i's (R, T_i) scan sampled every ``tr[i]`` seconds."""

    series: list[np.ndarray]
    tr: np.ndarray
    network: np.ndarray
    phenotypes: dict[str, np.ndarray] = field(default_factory=dict)


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
