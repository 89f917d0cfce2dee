"""Downstream evaluation metrics (scikit-learn), as plain ``dict[str, float]`` ready to log.

Classification: ``accuracy``, ``balanced_accuracy``, ``f1`` and ``auroc``. With two classes the
positive class is the greater label (``1`` of 0/1, ``"pat"`` of ``"ctrl"``/``"pat"``), F1 is that
class's F1 and AUROC is computed on its score. With more classes F1 is the macro average and AUROC
the one-vs-rest macro average over the (n, k) probability matrix. Regression: ``mse``, ``mae``,
``r2`` and ``pearson_r``. A metric that is undefined on the given data (AUROC with one class in
``y_true``, Pearson r of a constant) is ``nan``, never an exception.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1", "auroc")
REGRESSION_METRICS = ("mse", "mae", "r2", "pearson_r")


def _classes(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[Any] | None) -> np.ndarray:
    if classes is not None:
        return np.asarray(classes)
    return np.unique(np.concatenate([y_true, y_pred]))


def _score_matrix(y_score: np.ndarray, n_classes: int) -> np.ndarray:
    """Scores as an (n, k) matrix; a binary 1-D score is the positive column."""
    score = np.asarray(y_score, dtype=float)
    if score.ndim == 1:
        if n_classes != 2:
            raise ValueError(f"a 1-D y_score only fits binary problems; there are {n_classes} classes")
        return np.stack([1.0 - score, score], axis=1)
    if score.ndim != 2 or score.shape[1] != n_classes:
        raise ValueError(f"y_score must have one column per class ({n_classes}), got shape {score.shape}")
    return score


def auroc(y_true: np.ndarray, score: np.ndarray, classes: np.ndarray) -> float:
    """Binary AUROC of ``classes[1]`` or one-vs-rest macro AUROC; ``nan`` with < 2 classes in ``y_true``.

    A class absent from ``y_true`` has no one-vs-rest AUROC and is left out of the macro average
    (with every class present this is exactly scikit-learn's ``multi_class="ovr"``).
    """
    present = [i for i, c in enumerate(classes) if np.any(y_true == c)]
    if len(present) < 2:
        return float("nan")
    if len(classes) == 2:
        return float(skm.roc_auc_score(y_true == classes[1], score[:, 1]))
    if len(present) == len(classes):
        return float(skm.roc_auc_score(y_true, score, multi_class="ovr", average="macro", labels=classes))
    return float(np.mean([skm.roc_auc_score(y_true == classes[i], score[:, i]) for i in present]))


def classification_metrics(
    y_true: Any, y_pred: Any, y_score: Any, classes: Sequence[Any] | None = None
) -> dict[str, float]:
    """Accuracy, balanced accuracy, F1 and AUROC.

    ``y_score`` is the positive-class score (binary, shape (n,)) or an (n, k) probability matrix whose
    columns follow ``classes`` (default: the sorted labels of ``y_true`` and ``y_pred``). Pass
    ``classes`` whenever a test set may miss a class, so a 3-class problem is never taken for binary.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {y_true.shape} and {y_pred.shape}")
    labels = _classes(y_true, y_pred, classes)
    if len(labels) < 2:
        raise ValueError(f"classification metrics need at least two classes, got {list(labels)}")
    score = _score_matrix(y_score, len(labels))
    if score.shape[0] != y_true.shape[0]:
        raise ValueError(f"y_score has {score.shape[0]} rows for {y_true.shape[0]} labels")
    with warnings.catch_warnings():
        # small test sets may hold one label or predict a class absent from y_true: defined, documented cases
        warnings.simplefilter("ignore", UserWarning)
        if len(labels) == 2:
            f1 = skm.f1_score(y_true, y_pred, pos_label=labels[1], average="binary", zero_division=0)
        else:
            f1 = skm.f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)
        balanced = skm.balanced_accuracy_score(y_true, y_pred)
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced),
        "f1": float(f1),
        "auroc": auroc(y_true, score, labels),
    }


def balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    """Mean recall over the classes present in ``y_true`` (scikit-learn's definition), in plain numpy."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.unique(y_true)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; ``nan`` when either side is constant or there are fewer than 2 values."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2:
        return float("nan")
    da, db = a - a.mean(), b - b.mean()
    denom = np.sqrt((da @ da) * (db @ db))
    if denom == 0.0:
        return float("nan")
    return float(np.clip((da @ db) / denom, -1.0, 1.0))


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Mean squared error, mean absolute error, R^2 and Pearson r of predictions against targets."""
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(f"y_true and y_pred must be 1-D of equal, non-zero length, got {y_true.shape}, {y_pred.shape}")
    r2 = float(skm.r2_score(y_true, y_pred)) if y_true.size > 1 and np.ptp(y_true) > 0 else float("nan")
    return {
        "mse": float(skm.mean_squared_error(y_true, y_pred)),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "r2": r2,
        "pearson_r": pearson_r(y_true, y_pred),
    }
