"""JEPAEmbedding: nilearn masker output -> Brain-JEPA embeddings -> scikit-learn, with a tiny in-process encoder."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np
import pytest
import torch
from nilearn.connectome import ConnectivityMeasure
from nilearn.maskers import NiftiLabelsMasker
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline

from brainjepa.model import BrainEncoder, ModelConfig
from brainjepa.preprocess import RobustStats
from brainjepa_platform.evaluate.sklearn_api import JEPAEmbedding
from brainjepa_platform.tracking.bundle import EncoderBundle
from brainjepa_platform.tracking.names import encoder_model_name
from brainjepa_platform.tracking.registry import log_encoder
from brainjepa_platform.tracking.store import ensure_experiment

ATLAS, N_ROIS, FRAMES, MODEL_TR = "toy4", 4, 16, 2.0
DIM = 64  # the tiny preset's width

pytestmark = pytest.mark.timeout(120)


def tiny_bundle(stats: RobustStats | None = None, seed: int = 0) -> EncoderBundle:
    """A randomly initialised tiny encoder (4 ROIs x 16 frames at TR 2 s, 2 time patches), built in-process."""
    cfg = ModelConfig(size="tiny", n_rois=N_ROIS, frames=FRAMES, patch=8, n_gradients=3)
    gradients = np.random.default_rng(seed).standard_normal((N_ROIS, 3))
    torch.manual_seed(seed)
    encoder = BrainEncoder(cfg, torch.from_numpy(gradients).float()).eval().requires_grad_(False)
    return EncoderBundle(encoder, cfg, stats, [f"roi{r}" for r in range(N_ROIS)], ATLAS, gradients, MODEL_TR)


@pytest.fixture(scope="module")
def bundle() -> EncoderBundle:
    return tiny_bundle(RobustStats(median=np.full(N_ROIS, 3.0), iqr=np.full(N_ROIS, 2.0)))


def synthetic(n: int = 12, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` (T, R) series of 40-50 frames at TR 1 s; class 1 has a slow shared oscillation."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    series = []
    for i, label in enumerate(y):
        t = np.arange(40 + 5 * (i % 3))[:, None]
        series.append(5.0 + rng.normal(size=(len(t), N_ROIS)) + 2.0 * label * np.sin(2 * np.pi * t / 12.0))
    return series, y


def manual_embedding(
    bundle: EncoderBundle,
    series: np.ndarray,
    t_r: float,
    starts: list[float],
    stats: tuple[np.ndarray, np.ndarray],
    per_roi: bool = False,
) -> np.ndarray:
    """Independent reference: np.interp per ROI at each window's frame times, (x - median) / IQR, encoder, means."""
    frame_times = np.arange(series.shape[0]) * t_r
    median, iqr = stats
    windows = []
    for start in starts:
        times = start + np.arange(FRAMES) * MODEL_TR
        window = np.stack([np.interp(times, frame_times, series[:, r]) for r in range(N_ROIS)])
        windows.append((window - median[:, None]) / iqr[:, None])
    with torch.no_grad():
        tokens = bundle.encoder(torch.tensor(np.stack(windows), dtype=torch.float32)).numpy()
    if per_roi:  # tokens are ROI-major: (k, R * P, D)
        return tokens.reshape(len(starts), N_ROIS, -1, DIM).mean(axis=(0, 2)).ravel()
    return tokens.mean(axis=(0, 1))


def quartile_stats(series: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    q25, q50, q75 = np.percentile(np.concatenate(series, axis=0), [25, 50, 75], axis=0)
    return q50, q75 - q25


@pytest.fixture(scope="module")
def nitime_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[np.ndarray], float]:
    """NiftiLabelsMasker output ((T, R), 4 ROIs) on the two real 4-D BOLD runs shipped in the nitime wheel."""
    spec = importlib.util.find_spec("nitime")
    assert spec is not None, "nitime (real fMRI test data) is installed by `make test`"
    data = Path(spec.submodule_search_locations[0]) / "data"
    bolds = [str(data / name) for name in ("fmri1.nii.gz", "fmri2.nii.gz")]
    ref = nib.load(bolds[0])
    labels = np.zeros(ref.shape[:3], dtype=np.int16)
    labels[:5, :, :9], labels[5:, :, :9], labels[:5, :, 9:], labels[5:, :, 9:] = 1, 2, 3, 4
    atlas = tmp_path_factory.mktemp("atlas") / "atlas.nii.gz"
    nib.save(nib.Nifti1Image(labels, ref.affine), atlas)
    masker = NiftiLabelsMasker(str(atlas), strategy="mean", standardize=None)  # raw means (None: not z-scored)
    return [masker.fit_transform(bold) for bold in bolds], float(ref.header.get_zooms()[3])


def test_nilearn_masker_output_matches_manual_path(nitime_series, bundle) -> None:
    series, t_r = nitime_series
    assert t_r == pytest.approx(1.35) and [s.shape for s in series] == [(40, N_ROIS), (40, N_ROIS)]
    assert ConnectivityMeasure(kind="correlation").fit_transform(series).shape == (2, N_ROIS, N_ROIS)  # same input
    stats = quartile_stats(series)
    slack = 39 * t_r - (FRAMES - 1) * MODEL_TR  # 52.65 s of scan, 30 s of window

    features = JEPAEmbedding(bundle, t_r=t_r).fit_transform(series)
    assert features.shape == (2, DIM) and features.dtype == np.float32 and np.all(np.isfinite(features))
    np.testing.assert_allclose(
        features[1], manual_embedding(bundle, series[1], t_r, [0.0, slack], stats), rtol=1e-4, atol=1e-5
    )
    assert not np.allclose(features[0], features[1], atol=1e-3)

    strided = JEPAEmbedding(bundle, t_r=t_r, window_stride=10.0, pooling="roi").fit_transform(series)
    assert strided.shape == (2, N_ROIS * DIM)
    expected = manual_embedding(bundle, series[0], t_r, [0.0, 10.0, 20.0, slack], stats, per_roi=True)
    np.testing.assert_allclose(strided[0], expected, rtol=1e-4, atol=1e-5)


def test_pipeline_clone_and_feature_names(bundle) -> None:
    X, y = synthetic()
    pipe = Pipeline([("jepa", JEPAEmbedding(bundle, t_r=1.0)), ("clf", LogisticRegression(max_iter=2000))])
    predicted = pipe.fit(X, y).predict(X)
    assert predicted.shape == (len(X),) and set(predicted) <= {0, 1}
    names = pipe[:-1].get_feature_names_out()
    assert len(names) == pipe["clf"].coef_.shape[1] == DIM and names[0] == "jepa0" and names[-1] == f"jepa{DIM - 1}"
    assert np.all(np.isfinite(cross_val_score(pipe, X, y, cv=2)))  # clones and refits per fold

    copy = clone(pipe)
    assert copy["jepa"].get_params()["t_r"] == 1.0 and copy["jepa"].get_params()["pooling"] == "mean"
    with pytest.raises(NotFittedError):
        copy["jepa"].transform(X)
    roi = clone(pipe["jepa"]).set_params(pooling="roi").fit(X)
    roi_names = roi.get_feature_names_out()
    assert len(roi_names) == roi.transform(X[:2]).shape[1] == N_ROIS * DIM
    assert (roi_names[0], roi_names[DIM]) == ("roi0_jepa0", "roi1_jepa0")


def test_fit_statistics_are_used_for_transform(bundle) -> None:
    X, _ = synthetic(6, seed=1)
    shifted = [x + 100.0 for x in X]
    est = JEPAEmbedding(bundle, t_r=1.0).fit(X)
    median, iqr = quartile_stats(X)
    np.testing.assert_allclose(est.stats_.median, median)
    np.testing.assert_allclose(est.stats_.iqr, iqr)
    own, other = est.transform(X), est.transform(shifted)  # the shifted copy, scaled with X's statistics
    assert np.abs(own - other).max() > 1e-2
    by_hand = clone(est).fit(X)
    by_hand.stats_ = RobustStats(median=median - 100.0, iqr=iqr)
    np.testing.assert_allclose(other, by_hand.transform(X), rtol=1e-4, atol=1e-5)
    # fitted on the shifted copy itself, the shift is scaled away
    np.testing.assert_allclose(clone(est).fit(shifted).transform(shifted), own, rtol=1e-3, atol=1e-4)

    model = JEPAEmbedding(bundle, t_r=1.0, scaling="model").fit(X)
    assert model.stats_ is bundle.stats
    assert len(shifted[0]) == 40  # 39 s of scan, 30 s of window: windows at 0 s and 9 s
    expected = manual_embedding(bundle, shifted[0], 1.0, [0.0, 9.0], (bundle.stats.median, bundle.stats.iqr))
    np.testing.assert_allclose(model.transform(shifted[:1])[0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("X", "params", "match"),
    [
        ([np.ones((40, 5))], {}, r"X\[0\] has 5 ROIs .* model takes 4 ROIs \(atlas toy4\)"),
        ([np.ones((40, 4)), np.ones((4, 40))], {}, r"X\[1\] has 40 ROIs .*transposed"),
        ([np.ones((40, 4)), np.ones((10, 4))], {}, r"X\[1\]: scan of 10 frames at TR 1.0s .*shorter than"),
        ([np.where(np.arange(160).reshape(40, 4) == 9, np.nan, 1.0)], {}, r"X\[0\] contains NaN .*frame 2, ROI 1"),
        (np.ones((40, 4)), {}, r"X has shape \(40, 4\).*wrap it in a list"),
        ([], {}, "X is empty"),
        ([np.ones((40, 4))], {"t_r": None}, "t_r is required"),
        ([np.ones((40, 4))], {"t_r": -2}, r"t_r=-2: expected a number of seconds > 0"),
        ([np.ones((40, 4))], {"window_stride": 0}, r"window_stride=0: expected .* > 0"),
        ([np.ones((40, 4))], {"pooling": "max"}, r"pooling='max': expected one of \['mean', 'roi'\]"),
        ([np.ones((40, 4))], {"scaling": "zscore"}, "scaling='zscore'"),
        ([np.ones((40, 4))], {"batch_size": 0}, "batch_size=0"),
        ([np.ones((40, 4))], {"model": None}, "model=None: expected a registered encoder URI"),
    ],
)
def test_clear_errors(bundle, X, params, match) -> None:
    est = JEPAEmbedding(bundle, t_r=1.0).set_params(**params)
    with pytest.raises(ValueError, match=match):
        est.fit_transform(X)


def test_model_scaling_needs_model_statistics() -> None:
    est = JEPAEmbedding(tiny_bundle(stats=None), t_r=1.0, scaling="model")
    with pytest.raises(ValueError, match="scaling='model': this model \\(toy4\\) has no robust-scaling statistics"):
        est.fit(synthetic(2)[0])
    assert JEPAEmbedding(tiny_bundle(stats=None), t_r=1.0).fit_transform(synthetic(2)[0]).shape == (2, DIM)


@pytest.fixture
def registered(bundle, mlflow_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The tiny encoder registered in a real sqlite MLflow registry; yields its ``models:/`` URI."""
    uri = mlflow_db
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=ensure_experiment("sklearn", uri)):
            log_encoder(
                bundle.encoder,
                bundle.config,
                bundle.gradients,
                bundle.stats,
                bundle.roi_labels,
                ATLAS,
                target_tr=MODEL_TR,
            )
        yield f"models:/{encoder_model_name(ATLAS, N_ROIS)}@current"
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)


def test_registered_model_uri_loads_once(registered, bundle) -> None:
    X, _ = synthetic(4)
    est = JEPAEmbedding(registered, t_r=1.0).fit(X)
    loaded = est.bundle_
    assert loaded is not bundle and loaded.target_tr == MODEL_TR
    np.testing.assert_allclose(est.transform(X), JEPAEmbedding(bundle, t_r=1.0).fit_transform(X), rtol=1e-5, atol=1e-6)
    assert est.fit(X[:2]).bundle_ is loaded  # refitting reuses the loaded encoder
