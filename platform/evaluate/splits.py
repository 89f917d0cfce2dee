"""Subject-level train/validation/test splits of scan rows: no subject's scans land on two sides.

``subject_split`` cuts a seeded permutation of the distinct subjects into parts (stratified by each
subject's most frequent label for classification), or takes a given "train"/"val"/"test" column as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitIndices:
    """Row indices (into the scan arrays) of the train, validation and test parts."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def sizes(self) -> dict[str, int]:
        return {k: int(v.size) for k, v in self.parts().items()}


def _part_counts(n_subjects: int, fractions: Sequence[float]) -> list[int]:
    """Subjects per part: rounded shares, every part at least one subject (taken from the largest)."""
    if len(fractions) != 3 or any(f <= 0 for f in fractions):
        raise ValueError(f"fractions must be three positive numbers (train, val, test), got {tuple(fractions)}")
    if n_subjects < 3:
        raise ValueError(f"a train/val/test split needs at least 3 subjects (one per part), but there are {n_subjects}")
    total = float(sum(fractions))
    val = max(1, round(n_subjects * fractions[1] / total))
    test = max(1, round(n_subjects * fractions[2] / total))
    while n_subjects - val - test < 1:
        if val >= test:
            val -= 1
        else:
            test -= 1
    return [n_subjects - val - test, val, test]


def _subject_labels(inverse: np.ndarray, n_subjects: int, labels: Sequence[Any]) -> np.ndarray:
    """Each subject's most frequent label (index into the sorted distinct labels)."""
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    counts = np.zeros((n_subjects, int(codes.max()) + 1), dtype=np.int64)
    np.add.at(counts, (inverse, codes), 1)
    return counts.argmax(axis=1)


def _subject_order(
    n_subjects: int, rng: np.random.Generator, subject_class: np.ndarray | None, min_per_class: int
) -> np.ndarray:
    """A seeded order of subjects; with classes, interleaved so every prefix holds each class pro rata."""
    order = rng.permutation(n_subjects)
    if subject_class is None:
        return order
    sizes = np.bincount(subject_class)
    if np.any(sizes[sizes > 0] < min_per_class):
        return order
    key = np.empty(n_subjects)
    for c in np.flatnonzero(sizes):
        members = order[subject_class[order] == c]
        key[members] = (np.arange(members.size) + rng.random()) / members.size
    return np.lexsort((rng.random(n_subjects), key))


def _split_from_column(subject_ids: np.ndarray, inverse: np.ndarray, column: Sequence[Any]) -> SplitIndices:
    values = np.asarray([str(v) for v in column])
    bad = sorted(set(values.tolist()) - set(PARTS))
    if bad:
        raise ValueError(f"split column values must be one of {list(PARTS)}; found {bad}")
    per_subject: dict[int, set[str]] = {}
    for s, v in zip(inverse.tolist(), values.tolist()):
        per_subject.setdefault(s, set()).add(v)
    leaking = sorted(str(subject_ids[s]) for s, v in per_subject.items() if len(v) > 1)
    if leaking:
        more = " ..." if len(leaking) > 10 else ""
        raise ValueError(f"split column puts {len(leaking)} subjects on two sides: {leaking[:10]}{more}")
    split = SplitIndices(*(np.flatnonzero(values == part) for part in PARTS))
    empty = [k for k, v in split.parts().items() if v.size == 0]
    if empty:
        raise ValueError(f"split column leaves {empty} empty ({len(subject_ids)} subjects); every part needs a subject")
    return split


def subject_split(
    subjects: Sequence[str],
    seed: int,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    split_column: Sequence[str] | None = None,
    labels: Sequence[Any] | None = None,
    min_per_class: int = 3,
) -> SplitIndices:
    """Train/val/test scan indices with every subject's scans on one side.

    Without ``split_column``: a seeded permutation of the distinct subjects is cut into parts of
    ``fractions`` (rounded, at least one subject each). With classification ``labels`` (one per scan),
    subjects are stratified by their most frequent label when every class has ``min_per_class``
    subjects. With ``split_column`` (one "train"/"val"/"test" per scan) that assignment is used as is.
    """
    subject_ids, inverse = np.unique(np.asarray([str(s) for s in subjects]), return_inverse=True)
    if split_column is not None:
        if len(split_column) != len(inverse):
            raise ValueError(f"split column has {len(split_column)} values for {len(inverse)} scans")
        return _split_from_column(subject_ids, inverse, split_column)
    n = len(subject_ids)
    counts = _part_counts(n, fractions)
    subject_class = None
    if labels is not None:
        if len(labels) != len(inverse):
            raise ValueError(f"labels has {len(labels)} values for {len(inverse)} scans")
        subject_class = _subject_labels(inverse, n, labels)
    order = _subject_order(n, np.random.default_rng(seed), subject_class, min_per_class)
    part_of_subject = np.empty(n, dtype=np.int64)
    part_of_subject[order] = np.repeat(np.arange(3), counts)
    scan_part = part_of_subject[inverse]
    return SplitIndices(*(np.flatnonzero(scan_part == k) for k in range(3)))
