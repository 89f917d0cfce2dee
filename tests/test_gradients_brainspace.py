"""Diffusion-map gradients against the reference implementation, BrainSpace, on real HCP group FC.

BrainSpace 0.3.0 is installed with ``--no-deps`` (Makefile). Its ``brainspace.datasets`` module
imports VTK, which is not installed, so the group matrices it ships (Vos de Wael et al. 2018,
HCP discovery 'main' and 'holdout' groups; Schaefer and Vos de Wael parcellations, 100-400 ROIs)
are read straight from the package's CSV files, exactly as ``load_group_fc`` reads them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import brainspace
import numpy as np
import pytest
from brainspace.gradient import GradientMaps
from brainspace.gradient.alignment import procrustes
from brainspace.gradient.kernels import compute_affinity
from brainspace.gradient.utils import dominant_set
from scipy.linalg import subspace_angles

from brainjepa.gradients import affinity, diffusion_map, procrustes_align, sparsify_rows

MATRICES = Path(brainspace.__file__).parent / "datasets" / "matrices"
CASES = [(p, s, g) for p in ("schaefer", "vosdewael") for s in (100, 200, 300, 400) for g in ("main", "holdout")]


def load_group_fc(parcellation: str, scale: int, group: str = "main") -> np.ndarray:
    """``brainspace.datasets.load_group_fc`` without its VTK import."""
    path = MATRICES / f"{group}_group" / f"{parcellation}_{scale}_mean_connectivity_matrix.csv"
    return np.loadtxt(path, dtype=np.float64, delimiter=",")


def brainspace_gradients(fc: np.ndarray, kernel: str = "normalized_angle", n_components: int = 10) -> GradientMaps:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GradientMaps(n_components=n_components, approach="dm", kernel=kernel, random_state=0).fit(fc)


def exact_operator_eigenvalues(w: np.ndarray, alpha: float, m: int) -> np.ndarray:
    """lambda/(1-lambda) of P = D^-1 W(alpha) from a general (non-symmetric) eigensolver."""
    d = w.sum(axis=1) ** -alpha
    wa = w * d[:, None] * d[None, :]
    vals = np.sort(np.linalg.eigvals(wa / wa.sum(axis=1, keepdims=True)).real)[::-1][1 : m + 1]
    return vals / (1 - vals)


@pytest.mark.parametrize("parcellation,scale,group", CASES)
def test_matches_brainspace_on_hcp_group_fc(parcellation: str, scale: int, group: str) -> None:
    fc = load_group_fc(parcellation, scale, group)
    reference = brainspace_gradients(fc)
    ours = diffusion_map(fc, n_components=10)
    cosines = np.cos(subspace_angles(reference.gradients_[:, :3], ours.gradients[:, :3]))
    assert cosines.min() >= 0.999, cosines
    for k in range(3):
        r = np.corrcoef(reference.gradients_[:, k], ours.gradients[:, k])[0, 1]
        assert abs(r) >= 0.97, (k, r)
    np.testing.assert_allclose(ours.eigenvalues, reference.lambdas_, rtol=0.01)


@pytest.mark.parametrize("kernel", ["normalized_angle", "cosine"])
def test_affinity_and_sparsification_are_brainspaces(kernel: str) -> None:
    fc = load_group_fc("schaefer", 400)
    kept = (sparsify_rows(fc, 0.9) != 0).sum(axis=1)
    np.testing.assert_array_equal(kept, (dominant_set(fc, 1 - 0.9, as_sparse=False) != 0).sum(axis=1))
    assert kept[0] == 39  # BrainSpace's int(400 * (1 - 0.9)): 1 - 0.9 is just below 0.1 in floating point
    np.testing.assert_allclose(affinity(fc, kernel, 0.9), compute_affinity(fc, kernel=kernel, sparsity=0.9), atol=1e-7)


def test_cosine_kernel_is_exact_where_brainspace_is_approximate() -> None:
    # BrainSpace runs the symmetric Lanczos solver (eigsh) on the non-symmetric operator D^-1 W;
    # with the sparse cosine affinity that is off by percents, so the exact spectrum is the reference.
    fc = load_group_fc("schaefer", 400, "holdout")
    ours = diffusion_map(fc, n_components=10, kernel="cosine")
    exact = exact_operator_eigenvalues(compute_affinity(fc, kernel="cosine", sparsity=0.9), 0.5, 10)
    np.testing.assert_allclose(ours.eigenvalues, exact, rtol=1e-8)
    reference = brainspace_gradients(fc, kernel="cosine")
    assert np.cos(subspace_angles(reference.gradients_[:, :3], ours.gradients[:, :3])).min() >= 0.999


def test_procrustes_aligns_holdout_to_main_like_brainspace() -> None:
    main = diffusion_map(load_group_fc("schaefer", 400, "main"), 10).gradients
    holdout = diffusion_map(load_group_fc("schaefer", 400, "holdout"), 10).gradients
    aligned, rotation = procrustes_align(holdout, main)
    np.testing.assert_allclose(aligned, procrustes(holdout, main), atol=1e-12)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(10), atol=1e-12)
    before = [np.corrcoef(main[:, k], holdout[:, k])[0, 1] for k in range(5)]
    after = [np.corrcoef(main[:, k], aligned[:, k])[0, 1] for k in range(5)]
    assert min(before) < 0  # an independent cohort's gradient 2 comes out sign-flipped ...
    assert min(after) > 0.99  # ... and alignment puts every gradient back on the main group's axes
