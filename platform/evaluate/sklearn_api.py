"""scikit-learn / nilearn interface: a registered Brain-JEPA encoder as a scikit-learn transformer.

    from nilearn.maskers import NiftiLabelsMasker
    from brainjepa_platform.evaluate.sklearn_api import JEPAEmbedding

    series = [NiftiLabelsMasker(atlas).fit_transform(bold) for bold in bolds]  # each (T, R), time first
    features = JEPAEmbedding("models:/brainjepa-encoder-myatlas-400@current", t_r=0.8).fit_transform(series)

The input is what nilearn's maskers return and ``ConnectivityMeasure`` takes: a list of (T, R) arrays (lengths
may differ) or an (n, T, R) array. Each scan goes the way ``brainjepa embed`` takes it
(:func:`brainjepa_platform.evaluate.embed.embed_scan`): transposed to (R, T), resampled from ``t_r`` to the model's TR,
tiled into windows of the model's frames, robust-scaled, encoded by the frozen target encoder, and averaged over
windows and tokens (``pooling="mean"``: (n, D)) or over windows and time patches per ROI (``pooling="roi"``:
(n, R*D), ROI-major). ``scaling="data"`` scales with per-ROI median/IQR of the series given to ``fit`` (fit on
the training set, transform the test set with the training statistics); ``scaling="model"`` with the statistics
of the model's pretraining cohort.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from brainjepa.preprocess import RobustStats, robust_stats
from brainjepa_platform.evaluate.embed import embed_scan
from brainjepa_platform.tracking.bundle import EncoderBundle
from brainjepa_platform.tracking.registry import load_encoder

POOLINGS = ("mean", "roi")
SCALINGS = ("data", "model")
X_EXPECTED = "a list of (T, R) arrays (time first, as nilearn maskers return them) or an (n, T, R) array"


def _positive(name: str, value: Any, hint: str) -> float:
    """``value`` as a finite float > 0, or a ValueError naming ``name``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name}={value!r}: expected a number of seconds > 0 ({hint})")
    return number


def _scan(i: int, x: Any, n_rois: int, atlas: str) -> np.ndarray:
    """One subject's (T, R) series -> a finite float64 (R, T) array, or a ValueError naming ``X[i]``."""
    try:
        array = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"X[{i}] is not a numeric array ({exc})") from None
    if array.ndim != 2:
        raise ValueError(f"X[{i}] has shape {array.shape}: expected (T, R), time first, as nilearn maskers return it")
    if array.shape[1] != n_rois:
        hint = "; it looks transposed: time must come first, (T, R)" if array.shape[0] == n_rois else ""
        raise ValueError(
            f"X[{i}] has {array.shape[1]} ROIs (columns) but the model takes {n_rois} ROIs (atlas "
            f"{atlas}): extract the series with the model's atlas{hint}"
        )
    if not np.all(np.isfinite(array)):
        frame, roi = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(
            f"X[{i}] contains NaN or infinite values (first at frame {frame}, ROI {roi}): "
            "drop or interpolate those frames first"
        )
    return np.ascontiguousarray(array.T)


def as_scans(X: Any, n_rois: int, atlas: str) -> list[np.ndarray]:
    """``X`` (a list of (T, R) arrays or an (n, T, R) array) -> validated (R, T) float64 arrays."""
    if isinstance(X, np.ndarray) and X.ndim != 3:
        one = " (one subject's series? wrap it in a list)" if X.ndim == 2 else ""
        raise ValueError(f"X has shape {X.shape}: expected {X_EXPECTED}{one}")
    if not isinstance(X, (np.ndarray, Sequence)) or isinstance(X, (str, bytes)):
        raise TypeError(f"X is a {type(X).__name__}: expected {X_EXPECTED}")
    if len(X) == 0:
        raise ValueError(f"X is empty: expected {X_EXPECTED}")
    return [_scan(i, x, n_rois, atlas) for i, x in enumerate(X)]


def model_tr(bundle: EncoderBundle) -> float:
    """The TR (seconds) the model was pretrained at: every scan is resampled to it."""
    if not bundle.target_tr:
        raise ValueError(
            f"the model ({bundle.atlas}) does not record the TR it was pretrained at: register it "
            "with its TR (e.g. brainjepa import-checkpoint --tr SECONDS)"
        )
    return float(bundle.target_tr)


def model_stats(bundle: EncoderBundle) -> RobustStats:
    """The model's own robust-scaling statistics (its pretraining cohort's), for ``scaling="model"``."""
    if bundle.stats is None:
        raise ValueError(
            f"scaling='model': this model ({bundle.atlas}) has no robust-scaling statistics of its "
            "own (imported without --stats); use scaling='data' (the fitted series' median/IQR)"
        )
    return bundle.stats


class JEPAEmbedding(TransformerMixin, BaseEstimator):
    """Brain-JEPA embeddings of ROI time series, as a scikit-learn transformer (see the module docstring).

    Parameters
    ----------
    model: a registered encoder URI (``models:/NAME@ALIAS``, ``models:/NAME/latest``, ``runs:/ID/encoder``) read
        with :func:`brainjepa_platform.tracking.registry.load_encoder`, or an already loaded :class:`EncoderBundle`
        (moved to ``device`` in place).
    t_r: the data's repetition time in seconds (required).
    pooling: ``"mean"`` -> (n, D); ``"roi"`` -> (n, R*D), one D-vector per ROI in the model's ROI order.
    scaling: ``"data"`` (per-ROI median/IQR of the series given to ``fit``) or ``"model"`` (the model's own).
    window_stride: seconds between window starts (default: the window's length, i.e. consecutive windows);
        the last window always ends at the scan's end.
    batch_size: windows per encoder forward pass.
    device: where the encoder runs (``"cpu"``, ``"cuda"``, ...).

    Fitted attributes: ``bundle_`` (the loaded encoder), ``stats_`` (the scaling applied), ``target_tr_``
    (the model's TR).
    """

    def __init__(
        self,
        model: str | EncoderBundle | None = None,
        *,
        t_r: float | None = None,
        pooling: str = "mean",
        scaling: str = "data",
        window_stride: float | None = None,
        batch_size: int = 32,
        device: str = "cpu",
    ) -> None:
        self.model = model
        self.t_r = t_r
        self.pooling = pooling
        self.scaling = scaling
        self.window_stride = window_stride
        self.batch_size = batch_size
        self.device = device

    def _check_params(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r}: expected one of {list(POOLINGS)}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling={self.scaling!r}: expected one of {list(SCALINGS)}")
        if self.t_r is None:
            raise ValueError("t_r is required: the repetition time of the data in seconds (e.g. t_r=0.8)")
        _positive("t_r", self.t_r, "the data's repetition time")
        if self.window_stride is not None:
            _positive("window_stride", self.window_stride, "seconds between window starts, or None")
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, (int, np.integer))
            or self.batch_size < 1
        ):
            raise ValueError(f"batch_size={self.batch_size!r}: expected an integer >= 1")

    def _load_bundle(self) -> EncoderBundle:
        """The encoder bundle of ``model`` on ``device``, loaded once (a refit with the same model reuses it)."""
        key = (self.model if isinstance(self.model, str) else id(self.model), str(self.device))
        if getattr(self, "_bundle_key", None) == key and hasattr(self, "bundle_"):
            return self.bundle_
        if isinstance(self.model, EncoderBundle):
            bundle = self.model
            bundle.encoder.to(self.device)
        elif isinstance(self.model, str) and self.model:
            bundle = load_encoder(self.model, device=self.device)
        else:
            raise ValueError(
                f"model={self.model!r}: expected a registered encoder URI (models:/NAME@ALIAS, "
                "runs:/RUN_ID/encoder) or an EncoderBundle"
            )
        self._bundle_key = key
        return bundle

    def fit(self, X: Any, y: Any = None) -> JEPAEmbedding:
        """Load the encoder and, with ``scaling="data"``, take per-ROI median/IQR over all frames of ``X``."""
        self._check_params()
        bundle = self._load_bundle()
        scans = as_scans(X, bundle.config.n_rois, bundle.atlas)
        self.target_tr_ = model_tr(bundle)
        self.stats_ = robust_stats(scans) if self.scaling == "data" else model_stats(bundle)
        self.bundle_ = bundle
        return self

    def transform(self, X: Any) -> np.ndarray:
        """(n, T, R) series -> (n, D) embeddings (``pooling="mean"``) or (n, R*D) (``pooling="roi"``), float32."""
        check_is_fitted(self, ("bundle_", "stats_"))
        self._check_params()
        bundle = dataclasses.replace(self.bundle_, stats=self.stats_)
        scans = as_scans(X, bundle.config.n_rois, bundle.atlas)
        return np.stack([self._embed(bundle, i, series) for i, series in enumerate(scans)])

    def _embed(self, bundle: EncoderBundle, i: int, series: np.ndarray) -> np.ndarray:
        try:
            emb = embed_scan(
                bundle,
                series,
                float(self.t_r),
                self.target_tr_,
                self.pooling == "roi",
                int(self.batch_size),
                self.window_stride,
            )
        except ValueError as exc:  # e.g. a scan shorter than one window
            raise ValueError(f"X[{i}]: {exc}") from None
        return emb.pooled if emb.per_roi is None else emb.per_roi.ravel()

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``jepa0`` .. ``jepa{D-1}``, or ``<roi label>_jepa{k}`` (ROI-major) with ``pooling="roi"``."""
        check_is_fitted(self, "bundle_")
        dims = range(self.bundle_.config.dim)
        if self.pooling == "roi":
            return np.asarray([f"{label}_jepa{k}" for label in self.bundle_.roi_labels for k in dims], dtype=object)
        return np.asarray([f"jepa{k}" for k in dims], dtype=object)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # a list of 2-D series, or one 3-D array
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
