"""Small, complete dataset manifests for tests that need a dataset's manifest but none of its shards."""

from __future__ import annotations

import json
from pathlib import Path

from brainjepa.preprocess import RobustStats
from brainjepa_platform.data.manifest import (
    SCHEMA_VERSION,
    AtlasInfo,
    Counts,
    Manifest,
    ManifestStats,
    Range,
    ScanLength,
    SeriesLayout,
)


def small_manifest(
    n_rois: int,
    dataset: str = "cohort",
    atlas: str = "synthetic",
    stats: RobustStats | None = None,
    roi_labels: list[str] | None = None,
) -> Manifest:
    """The manifest of a dataset of 4 scans of 120 frames at TR 2 s (ROIs ``roi_0``... unless ``roi_labels``),
    without shards."""
    stats = stats or RobustStats(median=[0.0] * n_rois, iqr=[1.0] * n_rois)
    labels = tuple(roi_labels or (f"roi_{i}" for i in range(n_rois)))
    return Manifest(
        schema_version=SCHEMA_VERSION,
        dataset=dataset,
        created="2026-01-01T00:00:00Z",
        atlas=AtlasInfo(name=atlas, n_rois=n_rois, roi_labels=labels, decided_by="the test"),
        series=SeriesLayout(column="series", layout="row-major (n_rois, n_frames), flattened", dtype="float32"),
        counts=Counts(scans=4, subjects=2, quarantined=0, shards=0, frames=480),
        tr_seconds=Range(min=2.0, max=2.0),
        n_frames=Range(min=120, max=120),
        duration_seconds=Range(min=240.0, max=240.0),
        scan_lengths=(ScanLength(n_frames=120, tr=2.0, scans=4),),
        phenotypes={},
        shards=(),
        robust_stats=ManifestStats(
            median=tuple(float(x) for x in stats.median),
            iqr=tuple(float(x) for x in stats.iqr),
            method="per-ROI median and IQR",
        ),
        parameters={},
        command="tests",
        versions={},
    )


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """``folder`` holding only ``manifest.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest.to_json()))
    return folder
