"""Diffusion-map gradients: structure recovery, determinism, permutation invariance."""

from __future__ import annotations

import numpy as np

from brainjepa.gradients import diffusion_map, group_fc, pearson_fc
from brainjepa.synthetic import synthetic_cohort


def test_group_fc_is_fisher_z_average() -> None:
    cohort = synthetic_cohort(3, 12, n_frames=80, seed=0)
    z = [np.arctanh(np.clip(pearson_fc(s), -0.999999, 0.999999)) for s in cohort.series]
    expected = np.tanh(np.mean(z, axis=0))
    np.testing.assert_allclose(group_fc(cohort.series), expected, atol=1e-12)
    np.testing.assert_allclose(pearson_fc(cohort.series[0]), np.corrcoef(cohort.series[0]), atol=1e-10)


def test_first_gradient_separates_networks() -> None:
    cohort = synthetic_cohort(6, 60, n_frames=300, n_networks=3, noise=0.5, seed=1)
    result = diffusion_map(group_fc(cohort.series), n_components=3)
    # the first two gradients place ROIs by network: nearly all their variance is between networks
    for g in result.gradients[:, :2].T:
        means = np.array([g[cohort.network == k].mean() for k in range(3)])
        between = np.sum([(cohort.network == k).sum() * (means[k] - g.mean()) ** 2 for k in range(3)])
        assert between / np.sum((g - g.mean()) ** 2) > 0.9
    assert np.all(np.diff(result.eigenvalues) <= 1e-12)  # ordered by eigenvalue


def test_deterministic_and_permutation_invariant() -> None:
    fc = group_fc(synthetic_cohort(4, 40, n_frames=200, seed=2).series)
    first, again = diffusion_map(fc, 5), diffusion_map(fc, 5)
    np.testing.assert_array_equal(first.gradients, again.gradients)
    perm = np.random.default_rng(0).permutation(40)
    permuted = diffusion_map(fc[np.ix_(perm, perm)], 5)
    np.testing.assert_allclose(permuted.gradients, first.gradients[perm], atol=1e-8)
    np.testing.assert_allclose(permuted.eigenvalues, first.eigenvalues, rtol=1e-8)
