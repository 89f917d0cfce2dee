"""The typed dataset manifest: version and field checks that name the file, older version-1 manifests.

The round trip against a file written by a real ingest is in test_ingest.py (test_bids_roundtrip_matches_nilearn).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainjepa_platform.data.manifest import Manifest, ManifestError, read_manifest
from tests.manifests import small_manifest, write_manifest

# keys the ingest started writing after the first version-1 manifests (no schema bump): still optional
LATER_KEYS = ("generation", "duration_seconds", "scan_lengths")


def test_manifest_reads_back_what_it_writes(tmp_path) -> None:
    manifest = small_manifest(5)
    folder = write_manifest(tmp_path / "ds", manifest)
    read = read_manifest(str(folder))
    assert read == manifest and read.to_json() == json.loads((folder / "manifest.json").read_text())
    assert read.atlas.n_rois == 5 and read.counts.scans == 4 and read.scan_lengths[0].n_frames == 120
    np.testing.assert_array_equal(read.stats().iqr, np.ones(5))


def test_other_schema_version_names_the_file_and_both_versions(tmp_path) -> None:
    data = small_manifest(5).to_json() | {"schema_version": 2}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=rf"{tmp_path}/manifest.json: manifest schema_version 2, .* version 1"):
        read_manifest(str(tmp_path))
    del data["schema_version"]
    with pytest.raises(ManifestError, match=r"x/manifest.json: no schema_version \(expected 1\)"):
        Manifest.from_json(data, "x/manifest.json")


def test_missing_fields_are_named_with_their_section(tmp_path) -> None:
    data = small_manifest(5).to_json()
    del data["counts"]["scans"], data["shards"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=rf"{tmp_path}/manifest.json: manifest field\(s\) missing: shards "):
        read_manifest(str(tmp_path))
    data["shards"] = []
    with pytest.raises(ManifestError, match=r"f.json: manifest field\(s\) missing: counts.scans"):
        Manifest.from_json(data, "f.json")
    with pytest.raises(ManifestError, match="f.json: a manifest is a JSON object"):
        Manifest.from_json([data], "f.json")


def test_first_version_one_manifests_still_read() -> None:
    """Manifests ingested before the overwrite generation, the ROI decision, ignored inputs, durations and
    per-length counts were recorded: read with defaults; the per-length counts stay unknown (None)."""
    data = small_manifest(5).to_json()
    for key in LATER_KEYS:
        del data[key]
    del data["atlas"]["decided_by"], data["counts"]["ignored"]
    old = Manifest.from_json(data, "old.json")
    assert (old.generation, old.atlas.decided_by, old.counts.ignored) == ("", "", 0)
    assert old.scan_lengths is None and old.duration_seconds is None
    assert "scan_lengths" not in old.to_json()


def test_manifest_is_frozen_and_typed() -> None:
    manifest = small_manifest(3)
    with pytest.raises(AttributeError):
        manifest.atlas.n_rois = 4  # type: ignore[misc]
    assert manifest.atlas.roi_labels == ("roi_0", "roi_1", "roi_2")
    assert manifest.to_json()["atlas"]["roi_labels"] == ["roi_0", "roi_1", "roi_2"]


def test_dataset_info_prints_the_manifest(tmp_path, capsys) -> None:
    from brainjepa_platform.cli.main import main

    folder = write_manifest(tmp_path / "ds", small_manifest(5, dataset="toy"))
    assert main(["dataset", "info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"Dataset toy at {folder} (schema v1" in out and "atlas synthetic: 5 ROIs (roi_0, roi_1, roi_2, ...)" in out
    assert "TR 2-2 s, frames per scan 120-120, 240-240 s per scan" in out
    assert main(["dataset", "info", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((folder / "manifest.json").read_text())
