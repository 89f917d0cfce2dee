"""Linear probes on frozen features: task inference, the FC baseline, comparisons over seeds.

Everything here is in memory (numpy + scikit-learn): features are (n_scans, D) arrays, one row per
scan, with the scan's subject id and target. Splits are made over subjects, never scans, so no
subject's scans land on two sides (:mod:`brainjepa_platform.evaluate.splits`). ``compare_features``
runs the same seeded splits over several feature sets (the pretrained encoder, the FC baseline, a
random encoder) and aggregates per seed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from brainjepa.connectivity import fc_features  # noqa: F401  (the FC baseline, re-exported)
from brainjepa_platform.evaluate.metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    balanced_accuracy,
    classification_metrics,
    regression_metrics,
)
from brainjepa_platform.evaluate.splits import PARTS, SplitIndices, subject_split

Task = Literal["classification", "regression"]
MAX_CLASSES = 10
C_GRID = tuple(float(c) for c in np.logspace(-3, 3, 7))
ALPHA_GRID = tuple(float(a) for a in np.logspace(-3, 5, 9))


# --- task inference --------------------------------------------------------------------------------
def _as_numbers_or_none(values: Any) -> np.ndarray | None:
    """Float array (missing -> NaN) of a numeric column, or None for booleans, text and categories."""
    if isinstance(values, pd.Series | pd.Index):
        if isinstance(values.dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(values.dtype):
            return None
        if pd.api.types.is_numeric_dtype(values.dtype):
            return values.to_numpy(dtype=float, na_value=np.nan)
        values = values.to_numpy()
    array = np.asarray(values)
    if array.dtype.kind in "bUS":
        return None
    if array.dtype.kind == "O":
        if any(isinstance(v, str | bytes | bool | np.bool_) for v in array.ravel()):
            return None
        return pd.to_numeric(pd.Series(array.ravel()), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return array.astype(float).ravel()


def infer_task(values: Any) -> Task:
    """``"classification"`` or ``"regression"`` for a target column (numpy array or pandas Series).

    Rule: booleans, strings and categoricals are classification; numbers are classification when,
    ignoring missing values, there are at most 10 distinct values and all of them are integers
    (0/1 sex, a 0-3 diagnosis code, 1.0/2.0 groups); any other numeric column is regression
    (age, scores). Callers that know better pass the task explicitly instead.
    """
    numbers = _as_numbers_or_none(values)
    if numbers is None:
        return "classification"
    distinct = np.unique(numbers[np.isfinite(numbers)])
    if 0 < distinct.size <= MAX_CLASSES and np.all(distinct == np.round(distinct)):
        return "classification"
    return "regression"


# --- linear probe ----------------------------------------------------------------------------------
@dataclass
class ProbeResult:
    """Test-set metrics of one probe, the chosen hyper-parameter and the test predictions."""

    task: Task
    metrics: dict[str, float]
    param_name: str
    param_value: float
    val_scores: dict[float, float]
    y_true: np.ndarray
    y_pred: np.ndarray
    y_score: np.ndarray | None = None
    classes: np.ndarray | None = None
    sizes: dict[str, int] = field(default_factory=dict)


def _check_inputs(x: np.ndarray, y: np.ndarray, task: str) -> None:
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features must be (n_scans, D) with one target per scan, got {x.shape} and {y.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or Inf")
    missing = pd.isna(y) if task == "classification" else ~np.isfinite(y.astype(float))
    if np.any(missing):
        raise ValueError(f"{int(np.sum(missing))} targets are missing (or not finite); drop those scans first")


def _full_proba(model: LogisticRegression, x: np.ndarray, n_classes: int) -> np.ndarray:
    """predict_proba with one column per class of the whole problem (0 for classes unseen in training)."""
    proba = np.zeros((x.shape[0], n_classes))
    proba[:, model.classes_] = model.predict_proba(x)
    return proba


def _probe_classification(parts: dict[str, tuple[np.ndarray, np.ndarray]], y: np.ndarray, seed: int) -> ProbeResult:
    classes, codes = np.unique(y, return_inverse=True)
    (xtr, itr), (xva, iva), (xte, ite) = (parts[k] for k in PARTS)
    if np.unique(codes[itr]).size < 2:
        raise ValueError(f"the training part holds a single class ({classes[codes[itr][0]]!r}); cannot fit a probe")
    best, best_score, scores = None, -math.inf, {}
    for c in C_GRID:  # ascending C: a tie keeps the stronger regularisation
        model = LogisticRegression(C=c, max_iter=10_000, random_state=seed).fit(xtr, codes[itr])
        scores[c] = balanced_accuracy(codes[iva], model.predict(xva))
        if scores[c] > best_score:
            best, best_score = (c, model), scores[c]
    c, model = best
    proba = _full_proba(model, xte, len(classes))
    pred = classes[proba.argmax(axis=1)]
    metrics = classification_metrics(y[ite], pred, proba, classes=classes)
    return ProbeResult("classification", metrics, "C", c, scores, y[ite], pred, proba, classes)


def _probe_regression(parts: dict[str, tuple[np.ndarray, np.ndarray]], y: np.ndarray) -> ProbeResult:
    y = y.astype(float)
    (xtr, itr), (xva, iva), (xte, ite) = (parts[k] for k in PARTS)
    best, best_score, scores = None, math.inf, {}
    for a in sorted(ALPHA_GRID, reverse=True):  # descending alpha: a tie keeps the stronger regularisation
        model = Ridge(alpha=a).fit(xtr, y[itr])
        scores[a] = float(np.mean((model.predict(xva) - y[iva]) ** 2))
        if scores[a] < best_score:
            best, best_score = (a, model), scores[a]
    a, model = best
    pred = model.predict(xte)
    return ProbeResult(
        "regression", regression_metrics(y[ite], pred), "alpha", a, dict(sorted(scores.items())), y[ite], pred
    )


def linear_probe(x: np.ndarray, y: Any, task: Task, split: SplitIndices, seed: int = 0) -> ProbeResult:
    """Standardise on train, pick C (logistic) or alpha (ridge) on validation, evaluate on test.

    Classification picks the C of ``C_GRID`` with the best validation balanced accuracy (ties: smaller
    C); regression the alpha of ``ALPHA_GRID`` with the lowest validation MSE (ties: larger alpha).
    The model fitted on the training part with that value is scored on the test part.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
    _check_inputs(x, y, task)
    scaler = StandardScaler().fit(x[split.train])
    parts = {k: (scaler.transform(x[idx]), idx) for k, idx in split.parts().items()}
    result = _probe_classification(parts, y, seed) if task == "classification" else _probe_regression(parts, y)
    result.sizes = split.sizes()
    return result


# --- comparisons over seeds ------------------------------------------------------------------------
def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclass
class ComparisonResult:
    """Per feature set and seed, a :class:`ProbeResult`; means and (population) stds over seeds."""

    task: Task
    seeds: list[int]
    fractions: tuple[float, ...]
    results: dict[str, list[ProbeResult]]

    @property
    def names(self) -> list[str]:
        return list(self.results)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS

    @property
    def last(self) -> dict[str, ProbeResult]:
        """The last seed's result per feature set (its test y_true, y_pred, y_score feed plots)."""
        return {name: runs[-1] for name, runs in self.results.items()}

    def values(self, name: str, metric: str) -> np.ndarray:
        """One value per seed."""
        return np.array([r.metrics[metric] for r in self.results[name]], dtype=float)

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """{feature set: {metric: (mean, std)}}; std is ``np.std`` (ddof=0) over seeds; nan propagates."""
        return {
            name: {
                m: (float(np.mean(self.values(name, m))), float(np.std(self.values(name, m))))
                for m in self.metric_names
            }
            for name in self.names
        }

    def to_rows(self) -> list[dict[str, Any]]:
        """Long table: one dict per (feature set, metric) with mean, std and the number of seeds."""
        return [
            {"features": name, "metric": m, "mean": mean, "std": std, "n_seeds": len(self.seeds)}
            for name, per_metric in self.summary().items()
            for m, (mean, std) in per_metric.items()
        ]

    def format_table(self, digits: int = 3) -> str:
        """Plain-text table: rows are metrics, columns feature sets, entries ``mean ± std``."""
        from brainjepa_platform.tables import format_table

        summary = self.summary()
        rows = [
            [m, *(f"{summary[n][m][0]:.{digits}f} ± {summary[n][m][1]:.{digits}f}" for n in self.names)]
            for m in self.metric_names
        ]
        return format_table(["metric", *self.names], rows)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict (NaN -> null): summary, per-seed metrics, chosen hyper-parameters, split sizes."""
        out: dict[str, Any] = {
            "task": self.task,
            "seeds": list(self.seeds),
            "fractions": list(self.fractions),
            "features": self.names,
            "metrics": list(self.metric_names),
            "summary": {},
            "per_seed": {},
        }
        for name, per_metric in self.summary().items():
            out["summary"][name] = {
                m: {"mean": _finite_or_none(a), "std": _finite_or_none(s)} for m, (a, s) in per_metric.items()
            }
            out["per_seed"][name] = [
                {
                    "seed": seed,
                    "sizes": r.sizes,
                    r.param_name: r.param_value,
                    "metrics": {m: _finite_or_none(v) for m, v in r.metrics.items()},
                }
                for seed, r in zip(self.seeds, self.results[name])
            ]
        json.dumps(out, allow_nan=False)  # fail here, not in the logger, if something slipped through
        return out


def compare_features(
    features: Mapping[str, np.ndarray],
    subjects: Sequence[str],
    y: Any,
    task: Task,
    seeds: Sequence[int],
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    split_column: Sequence[str] | None = None,
) -> ComparisonResult:
    """For each seed, one subject split shared by every feature set, and a linear probe per feature set.

    With ``split_column`` the split is the same for every seed (seeds then only seed the solvers).
    Classification splits are stratified by label where every class has enough subjects.
    """
    if not features:
        raise ValueError("compare_features needs at least one feature set")
    if not seeds:
        raise ValueError("compare_features needs at least one seed")
    y = np.asarray(y)
    for name, x in features.items():
        if np.shape(x)[0] != y.shape[0] or len(subjects) != y.shape[0]:
            raise ValueError(
                f"feature set {name!r} has {np.shape(x)[0]} rows, targets {y.shape[0]}, "
                f"subjects {len(subjects)}: they must match"
            )
    labels = y if task == "classification" else None
    results: dict[str, list[ProbeResult]] = {name: [] for name in features}
    for seed in seeds:
        split = subject_split(subjects, seed, fractions, split_column, labels=labels)
        for name, x in features.items():
            results[name].append(linear_probe(x, y, task, split, seed))
    return ComparisonResult(task, [int(s) for s in seeds], tuple(float(f) for f in fractions), results)
