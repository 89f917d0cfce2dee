"""Linear probes: subject-level splits, task inference, probe quality, FC baseline, seed aggregation."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from brainjepa_platform.evaluate.metrics import CLASSIFICATION_METRICS
from brainjepa_platform.evaluate.probe import (
    ALPHA_GRID,
    C_GRID,
    compare_features,
    fc_features,
    infer_task,
    linear_probe,
)
from brainjepa_platform.evaluate.splits import subject_split


@pytest.fixture(autouse=True)
def one_blas_thread() -> Iterator[None]:
    """Tiny solves: threaded BLAS only adds spin-waiting (30x slower on a busy 2-core machine)."""
    with threadpool_limits(limits=1):
        yield


def _cohort(n_subjects: int = 60, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Subjects with 1-3 scans each and a per-subject binary label (one third positive)."""
    rng = np.random.default_rng(seed)
    scans = rng.integers(1, 4, n_subjects)
    subjects = [f"sub-{i:03d}" for i in range(n_subjects) for _ in range(scans[i])]
    label = (np.arange(n_subjects) % 3 == 0).astype(int)
    y = np.array([label[int(s[4:])] for s in subjects])
    return subjects, y


def _subjects_of(subjects: list[str], idx: np.ndarray) -> set[str]:
    return {subjects[i] for i in idx}


def test_split_is_subject_level_covering_and_roughly_proportional() -> None:
    subjects, _ = _cohort()
    split = subject_split(subjects, seed=3)
    parts = {k: _subjects_of(subjects, v) for k, v in split.parts().items()}
    assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"] and not parts["val"] & parts["test"]
    assert sorted(np.concatenate(list(split.parts().values()))) == list(range(len(subjects)))
    assert [len(p) for p in parts.values()] == [36, 12, 12]  # 60 subjects x (0.6, 0.2, 0.2)


def test_split_is_seeded() -> None:
    subjects, _ = _cohort()
    a, b, c = (subject_split(subjects, seed=s) for s in (1, 1, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a.parts().values(), b.parts().values()))
    assert not np.array_equal(a.test, c.test)


def test_split_stratifies_by_label() -> None:
    subjects, y = _cohort()
    for seed in range(5):
        split = subject_split(subjects, seed=seed, labels=y)
        for idx in split.parts().values():
            positives = {s for s, label in zip(np.asarray(subjects)[idx], y[idx]) if label == 1}
            share = len(positives) / len(_subjects_of(subjects, idx))
            assert share == pytest.approx(1 / 3, abs=0.06)


def test_split_column_is_honoured_and_checked() -> None:
    subjects = ["a", "a", "b", "c", "d", "d"]
    column = ["train", "train", "val", "test", "train", "train"]
    split = subject_split(subjects, seed=0, split_column=column)
    assert split.train.tolist() == [0, 1, 4, 5] and split.val.tolist() == [2] and split.test.tolist() == [3]
    with pytest.raises(ValueError, match=r"\['training', 'validation'\]"):
        subject_split(subjects, 0, split_column=["training", "train", "validation", "test", "train", "train"])
    with pytest.raises(ValueError, match=r"two sides: \['a'\]"):
        subject_split(subjects, 0, split_column=["train", "test", "val", "test", "train", "train"])
    with pytest.raises(ValueError, match=r"\['val'\] empty"):
        subject_split(subjects, 0, split_column=["train", "train", "test", "test", "train", "train"])


def test_split_needs_enough_subjects() -> None:
    with pytest.raises(ValueError, match="at least 3 subjects.*there are 2"):
        subject_split(["a", "a", "b"], seed=0)
    small = subject_split(["a", "b", "c"], seed=0)
    assert small.sizes() == {"train": 1, "val": 1, "test": 1}


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (np.array([23.5, 41.2, 67.0, 35.8]), "regression"),
        (pd.Series(["M", "F", "F", "M"]), "classification"),
        (np.array(["M", "F"]), "classification"),
        (np.array([0, 1, 1, 0]), "classification"),
        (pd.Series([0.0, 1.0, np.nan, 1.0]), "classification"),
        (pd.Series([1, None, 0], dtype="Int64"), "classification"),
        (np.array([True, False]), "classification"),
        (pd.Series(["ctrl", "pat"]).astype("category"), "classification"),
        (np.arange(40), "regression"),  # many distinct integers: a score
        (np.array([0.5, 1.0, 1.5]), "regression"),  # few values but not integers
    ],
)
def test_infer_task(values, task) -> None:
    assert infer_task(values) == task


def _labelled_features(n_subjects: int = 150, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    subjects = [f"s{i}" for i in range(n_subjects)]
    y = rng.integers(0, 2, n_subjects)
    signal = rng.standard_normal((n_subjects, 16))
    signal[:, :3] += 1.5 * (2 * y[:, None] - 1)
    noise = rng.standard_normal((n_subjects, 16))
    return subjects, y, signal, noise


def test_probe_finds_label_signal_and_not_noise() -> None:
    subjects, y, signal, noise = _labelled_features()
    split = subject_split(subjects, seed=0, labels=y)
    good = linear_probe(signal, y, "classification", split, seed=0)
    bad = linear_probe(noise, y, "classification", split, seed=0)
    assert good.metrics["accuracy"] > 0.85 and good.metrics["auroc"] > 0.9
    assert bad.metrics["balanced_accuracy"] < 0.7
    assert good.param_name == "C" and good.param_value in C_GRID and set(good.val_scores) == set(C_GRID)
    assert good.y_score.shape == (split.test.size, 2) and np.allclose(good.y_score.sum(axis=1), 1.0)
    assert np.array_equal(good.y_true, y[split.test]) and list(good.classes) == [0, 1]


def test_probe_keeps_string_labels() -> None:
    subjects, y, signal, _ = _labelled_features()
    names = np.array(["ctrl", "pat"])[y]
    split = subject_split(subjects, seed=1, labels=names)
    result = linear_probe(signal, names, "classification", split, seed=1)
    assert set(result.y_pred) <= {"ctrl", "pat"} and list(result.classes) == ["ctrl", "pat"]


def test_ridge_alpha_follows_the_noise() -> None:
    rng = np.random.default_rng(0)
    subjects = [f"s{i}" for i in range(200)]
    x = rng.standard_normal((200, 20))
    split = subject_split(subjects, seed=0)
    clean = linear_probe(x, x @ rng.standard_normal(20), "regression", split)
    pure_noise = linear_probe(x, rng.standard_normal(200), "regression", split)
    assert clean.param_name == "alpha" and clean.param_value <= 1.0 and clean.metrics["r2"] > 0.99
    assert pure_noise.param_value >= 1e3 and pure_noise.param_value in ALPHA_GRID


def test_fc_features_equal_corrcoef() -> None:
    rng = np.random.default_rng(0)
    scans = [rng.standard_normal((7, t)) for t in (30, 45, 30)]
    scans[1][:, 5:] += scans[1][:, :-5]  # some structure
    got = fc_features(scans, dtype=np.float64)
    rows, cols = np.triu_indices(7, k=1)
    expected = np.stack([np.arctanh(np.corrcoef(s)[rows, cols]) for s in scans])
    assert got.shape == (3, 21)
    np.testing.assert_allclose(got, expected, atol=1e-10)
    constant = scans[0].copy()
    constant[2] = 4.0
    assert np.all(fc_features([constant])[0][(rows == 2) | (cols == 2)] == 0)
    duplicate = np.stack([scans[0][0], scans[0][0]])
    assert np.isfinite(fc_features([duplicate])).all()


def test_compare_features_aggregates_over_seeds() -> None:
    subjects, y, signal, noise = _labelled_features(n_subjects=90)
    seeds = [0, 1, 2]
    result = compare_features({"model": signal, "random-encoder": noise}, subjects, y, "classification", seeds)
    summary = result.summary()
    for name in ("model", "random-encoder"):
        for metric in CLASSIFICATION_METRICS:
            per_seed = [r.metrics[metric] for r in result.results[name]]
            assert summary[name][metric] == (pytest.approx(np.mean(per_seed)), pytest.approx(np.std(per_seed)))
    # one split per seed shared by both feature sets
    for a, b in zip(result.results["model"], result.results["random-encoder"]):
        assert np.array_equal(a.y_true, b.y_true) and a.sizes == b.sizes
    assert summary["model"]["accuracy"][0] > summary["random-encoder"]["accuracy"][0]
    assert result.last["model"] is result.results["model"][-1]

    table = result.format_table().splitlines()
    assert [c.strip() for c in table[0].split("|")] == ["metric", "model", "random-encoder"]
    mean, std = summary["model"]["auroc"]
    assert any(line.startswith("auroc") and f"{mean:.3f} ± {std:.3f}" in line for line in table)
    rows = result.to_rows()
    assert len(rows) == 2 * len(CLASSIFICATION_METRICS) and {"features", "metric", "mean", "std"} <= set(rows[0])
    blob = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert blob["summary"]["model"]["accuracy"]["mean"] == pytest.approx(summary["model"]["accuracy"][0])
    assert [p["seed"] for p in blob["per_seed"]["model"]] == seeds


def test_compare_features_regression_with_split_column() -> None:
    rng = np.random.default_rng(1)
    subjects = [f"s{i // 2}" for i in range(80)]
    x = rng.standard_normal((80, 6))
    y = x[:, 0] * 3 + 40 + 0.1 * rng.standard_normal(80)
    column = ["train" if i < 48 else "val" if i < 64 else "test" for i in range(80)]
    result = compare_features({"model": x}, subjects, y, "regression", [0, 1], split_column=column)
    assert result.summary()["model"]["mse"][1] == pytest.approx(0.0)  # same split for every seed
    assert result.summary()["model"]["pearson_r"][0] > 0.99
    assert "mse" in result.format_table()
