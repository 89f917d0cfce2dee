"""Evaluation metrics on fixed inputs: values counted by hand, and the same values from scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from brainjepa_platform.evaluate.metrics import balanced_accuracy, classification_metrics, pearson_r, regression_metrics

# binary, 8 labels: TP = 3 (rows 4, 5, 7), FN = 1 (row 6), FP = 2 (rows 2, 3), TN = 2 (rows 0, 1)
B_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 1])
B_PRED = np.array([0, 0, 1, 1, 1, 1, 0, 1])
# positive scores .8 .9 .3 .4 against negatives .1 .2 .6 .7: 4 + 4 + 2 + 2 = 12 of 16 pairs ordered
B_SCORE = np.array([0.1, 0.2, 0.6, 0.7, 0.8, 0.9, 0.3, 0.4])

# three classes, 9 labels
M_TRUE = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
M_PRED = np.array([0, 0, 0, 1, 1, 2, 2, 2, 0])
M_PROBA = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.6, 0.3, 0.1],
        [0.4, 0.5, 0.1],
        [0.2, 0.7, 0.1],
        [0.1, 0.6, 0.3],
        [0.1, 0.4, 0.5],
        [0.2, 0.1, 0.7],
        [0.1, 0.3, 0.6],
        [0.5, 0.2, 0.3],
    ]
)


def test_binary_by_hand() -> None:
    m = classification_metrics(B_TRUE, B_PRED, B_SCORE)
    precision, recall = 3 / 5, 3 / 4
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 4) / 2)  # recall of 1, recall of 0
    assert m["f1"] == pytest.approx(2 * precision * recall / (precision + recall))  # = 2/3
    assert m["auroc"] == pytest.approx(12 / 16)


def test_binary_matches_sklearn_and_accepts_two_column_scores() -> None:
    m = classification_metrics(B_TRUE, B_PRED, np.stack([1 - B_SCORE, B_SCORE], axis=1))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(B_TRUE, B_PRED))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(B_TRUE, B_PRED))
    assert m["f1"] == pytest.approx(skm.f1_score(B_TRUE, B_PRED))
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(B_TRUE, B_SCORE))


def test_binary_positive_class_is_the_greater_label() -> None:
    names = np.array(["ctrl", "pat"])
    m = classification_metrics(names[B_TRUE], names[B_PRED], B_SCORE)
    assert m["f1"] == pytest.approx(2 / 3)  # F1 of "pat", not of "ctrl" (4/7)
    assert m["auroc"] == pytest.approx(0.75)
    assert skm.f1_score(B_TRUE, B_PRED, pos_label=0) == pytest.approx(4 / 7)


def test_multiclass_by_hand() -> None:
    m = classification_metrics(M_TRUE, M_PRED, M_PROBA)
    # per class (TP, FP, FN): 0 -> (3, 1, 0), 1 -> (2, 0, 1), 2 -> (2, 1, 1)
    f1 = [2 * 3 / (2 * 3 + 1 + 0), 2 * 2 / (2 * 2 + 0 + 1), 2 * 2 / (2 * 2 + 1 + 1)]  # 6/7, 4/5, 2/3
    assert m["accuracy"] == pytest.approx(7 / 9)
    assert m["balanced_accuracy"] == pytest.approx((3 / 3 + 2 / 3 + 2 / 3) / 3)
    assert m["f1"] == pytest.approx(sum(f1) / 3)
    # one-vs-rest ordered pairs out of 3 x 6: class 0 -> 17, class 1 -> 17, class 2 -> 16.5 (one tie)
    assert m["auroc"] == pytest.approx((17 + 17 + 16.5) / 54)


def test_multiclass_matches_sklearn() -> None:
    m = classification_metrics(M_TRUE, M_PRED, M_PROBA)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(M_TRUE, M_PRED))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(M_TRUE, M_PRED))
    assert m["f1"] == pytest.approx(skm.f1_score(M_TRUE, M_PRED, average="macro"))
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(M_TRUE, M_PROBA, multi_class="ovr", average="macro"))


def test_numpy_balanced_accuracy_matches_sklearn() -> None:
    assert balanced_accuracy(B_TRUE, B_PRED) == pytest.approx(skm.balanced_accuracy_score(B_TRUE, B_PRED))
    assert balanced_accuracy(M_TRUE, M_PRED) == pytest.approx(skm.balanced_accuracy_score(M_TRUE, M_PRED))
    assert balanced_accuracy([0, 0, 1], [0, 2, 1]) == pytest.approx((1 / 2 + 1) / 2)  # class 2 never true


def test_multiclass_test_set_missing_a_class() -> None:
    keep = M_TRUE != 2  # classes 0 and 1 only, but three probability columns
    m = classification_metrics(M_TRUE[keep], M_PRED[keep], M_PROBA[keep], classes=[0, 1, 2])
    y, s = M_TRUE[keep], M_PROBA[keep]
    expected = np.mean([skm.roc_auc_score(y == c, s[:, c]) for c in (0, 1)])
    assert m["auroc"] == pytest.approx(expected)
    assert m["f1"] == pytest.approx(skm.f1_score(y, M_PRED[keep], average="macro", labels=[0, 1, 2], zero_division=0))


def test_auroc_undefined_with_one_class() -> None:
    m = classification_metrics([1, 1, 1], [1, 0, 1], [0.9, 0.2, 0.7], classes=[0, 1])
    assert math.isnan(m["auroc"])
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_score_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="one column per class"):
        classification_metrics(M_TRUE, M_PRED, M_PROBA[:, :2])


def test_regression_by_hand_and_against_sklearn() -> None:
    y_true, y_pred = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 2.0, 2.0, 6.0])
    m = regression_metrics(y_true, y_pred)
    # errors 1, 0, -1, 2; deviations (-1.5, -.5, .5, 1.5) and (-1, -1, -1, 3): cross 6, squares 5 and 12
    assert m["mse"] == pytest.approx(6 / 4)
    assert m["mae"] == pytest.approx(4 / 4)
    assert m["r2"] == pytest.approx(1 - 6 / 5)
    assert m["pearson_r"] == pytest.approx(6 / math.sqrt(5 * 12))
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y_true, y_pred))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y_true, y_pred))
    assert m["r2"] == pytest.approx(skm.r2_score(y_true, y_pred))
    assert m["pearson_r"] == pytest.approx(np.corrcoef(y_true, y_pred)[0, 1])


def test_pearson_nan_when_constant() -> None:
    assert math.isnan(pearson_r(np.array([1.0, 2.0, 3.0]), np.array([5.0, 5.0, 5.0])))
    assert math.isnan(regression_metrics([2.0, 2.0], [1.0, 3.0])["pearson_r"])
