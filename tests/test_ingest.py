"""Cohort ingestion against real services: local Ray, a moto S3 server on loopback, real NIfTI files."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pytest
from nilearn.maskers import NiftiLabelsMasker

from brainjepa.config import ConfigError
from brainjepa.connectivity import fc_features
from brainjepa.fingerprint import identification_accuracy, zscore_segments
from brainjepa_platform.data.extract import CleanConfig
from brainjepa_platform.data.ingestion import IngestOptions, ingest, shard_locations
from brainjepa_platform.data.manifest import Counts, read_manifest
from brainjepa_platform.data.sources import discover
from brainjepa_platform.data.synth import SynthOptions, bids_files, write_bids
from brainjepa_platform.storage import StorageError, resolve

ON_RAY = pytest.mark.usefixtures("ray_cluster")  # (conftest marks these integration)


def read_rows(uri: str) -> dict[str, dict]:
    loc, paths = shard_locations(uri)
    rows = {}
    for path in paths:
        for row in pq.read_table(path, filesystem=loc.fs).to_pylist():
            row["series"] = np.asarray(row["series"], dtype=np.float64).reshape(row["n_rois"], row["n_frames"])
            assert row["scan_id"] not in rows, "duplicate scan"
            rows[row["scan_id"]] = row
    return rows


@pytest.fixture(scope="module")
def bids(tmp_path_factory) -> dict[str, str]:
    return write_bids(resolve(tmp_path_factory.mktemp("bids")), SynthOptions(subjects=5, rois=12, frames=(60, 90)))


def masker_reference(atlas: str, bold: str) -> np.ndarray:
    return NiftiLabelsMasker(atlas, strategy="mean").fit_transform(bold).T


@ON_RAY
def test_bids_roundtrip_matches_nilearn(bids, tmp_path) -> None:
    out = str(tmp_path / "ds")
    result = ingest(
        bids["source"],
        out,
        IngestOptions(atlas=bids["atlas"], labels=bids["labels"], stats_frames_per_scan=10_000),
        progress=False,
    )
    assert result.exit_code == 0 and not result.quarantined
    manifest = read_manifest(out)
    rows = read_rows(out)
    # sessions and runs discovered: subject 004 has two sessions, subject 005 two runs
    assert set(rows) == {
        "sub-001_task-rest",
        "sub-002_task-rest",
        "sub-003_task-rest",
        "sub-004_ses-1_task-rest",
        "sub-004_ses-2_task-rest",
        "sub-005_task-rest_run-1",
        "sub-005_task-rest_run-2",
    }
    assert manifest.counts == Counts(
        scans=7, subjects=5, quarantined=0, ignored=0, shards=1, frames=sum(r["n_frames"] for r in rows.values())
    )
    assert sum(e.scans for e in manifest.scan_lengths) == 7
    assert manifest.atlas.decided_by == f"the atlas {bids['atlas']} and labels {bids['labels']}"
    assert manifest.atlas.roi_labels[0] == "7Networks_LH_Vis_1" and manifest.atlas.n_rois == 12
    # the typed manifest writes back exactly the file the ingest wrote
    written = json.loads((Path(out) / "manifest.json").read_text())
    assert manifest.to_json() == written and result.manifest.to_json() == written
    assert list(manifest.to_json()) == list(written)  # same keys in the same order
    row = rows["sub-004_ses-2_task-rest"]
    assert row["session"] == "2" and row["subject"] == "004" and row["sex"] in ("M", "F") and row["age"] > 0
    bold = Path(bids["source"]) / "sub-004/ses-2/func/sub-004_ses-2_task-rest_bold.nii.gz"
    assert row["tr"] == json.loads(bold.with_name(bold.name.replace(".nii.gz", ".json")).read_text())["RepetitionTime"]
    for r in rows.values():
        np.testing.assert_allclose(r["series"], masker_reference(bids["atlas"], r["source"]), atol=1e-5, rtol=1e-6)
    # robust statistics over the cohort (every frame sampled here) equal a direct computation
    everything = np.concatenate([r["series"] for r in rows.values()], axis=1)
    q25, med, q75 = np.percentile(everything, [25, 50, 75], axis=1)
    np.testing.assert_allclose(manifest.robust_stats.median, med, rtol=1e-5)
    np.testing.assert_allclose(manifest.robust_stats.iqr, q75 - q25, rtol=1e-5)


@ON_RAY
def test_s3_to_s3_equals_local(bids, tmp_path, s3_endpoint) -> None:
    src = "s3://cohort-in/bids"
    write_bids(resolve(src), SynthOptions(subjects=5, rois=12, frames=(60, 90)))
    out = "s3://cohort-out/ingested"
    result = ingest(
        src,
        out,
        IngestOptions(atlas=f"{src}/atlas/atlas.nii.gz", labels=f"{src}/atlas/labels.tsv", scans_per_shard=3),
        progress=False,
    )
    assert result.manifest.counts.shards == 3  # 7 scans, 3 per shard
    local = str(tmp_path / "local")
    ingest(bids["source"], local, IngestOptions(atlas=bids["atlas"], labels=bids["labels"]), progress=False)
    remote_rows, local_rows = read_rows(out), read_rows(local)
    assert set(remote_rows) == set(local_rows)
    for k in local_rows:
        np.testing.assert_array_equal(remote_rows[k]["series"], local_rows[k]["series"])
    manifest_text = json.dumps(read_manifest(out).to_json())
    assert "testing-secret-do-not-log" not in manifest_text and "testing-key" not in manifest_text


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, tr: float | None = 2.0) -> None:
    img = nib.Nifti1Image(data.astype(np.float32), affine)
    if tr is not None and data.ndim == 4:
        img.header.set_xyzt_units("mm", "sec")
        img.header.set_zooms((*img.header.get_zooms()[:3], tr))
    nib.save(img, path)


@ON_RAY
def test_bad_inputs_are_quarantined_and_the_rest_ingested(bids, tmp_path) -> None:
    src = tmp_path / "bad"
    func = src / "sub-good/func"
    func.mkdir(parents=True)
    good = Path(bids["source"]) / "sub-001/func/sub-001_task-rest_bold.nii.gz"
    shutil.copy(good, func / "sub-good_task-rest_bold.nii.gz")
    img = nib.load(good)
    data, affine = img.get_fdata(), img.affine

    def add(sub: str, writer) -> None:
        d = src / f"sub-{sub}/func"
        d.mkdir(parents=True)
        writer(d / f"sub-{sub}_task-rest_bold.nii.gz")

    add("trunc", lambda p: p.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2]))
    add("corrupt", lambda p: p.write_bytes(b"\x1f\x8b" + b"not really gzip" * 100))
    add("threed", lambda p: _write_nifti(p, data[..., 0], affine))
    nan = data.copy()
    nan[data[..., 0] != 0, 5] = np.nan
    add("nan", lambda p: _write_nifti(p, nan, affine))
    const = data.copy()
    const[...] = 7.0
    add("const", lambda p: _write_nifti(p, const, affine))
    add("short", lambda p: _write_nifti(p, data[..., :10], affine))
    add("notr", lambda p: _write_nifti(p, data, affine, tr=None))
    far = affine.copy()
    far[:3, 3] += 500.0
    add("elsewhere", lambda p: _write_nifti(p, data, far))
    shutil.copy(Path(bids["source"]) / "dataset_description.json", src)

    out = str(tmp_path / "ds")
    result = ingest(
        str(src), out, IngestOptions(atlas=bids["atlas"], labels=bids["labels"], scans_per_shard=4), progress=False
    )
    reasons = {q["scan_id"].split("_")[0]: q["reason"] for q in result.quarantined}
    assert set(reasons) == {
        "sub-trunc",
        "sub-corrupt",
        "sub-threed",
        "sub-nan",
        "sub-const",
        "sub-short",
        "sub-notr",
        "sub-elsewhere",
    }
    assert "truncated" in reasons["sub-trunc"] or "gzip" in reasons["sub-trunc"]
    assert "gzip" in reasons["sub-corrupt"]
    assert "4-D" in reasons["sub-threed"]
    assert "NaN" in reasons["sub-nan"]
    assert "constant" in reasons["sub-const"]
    assert "minimum" in reasons["sub-short"]
    assert "TR" in reasons["sub-notr"]
    assert "same space" in reasons["sub-elsewhere"]
    assert result.exit_code == 3
    assert list(read_rows(out)) == ["sub-good_task-rest"]
    report = json.loads((Path(out) / "quarantine.json").read_text())
    assert {q["path"] for q in report["quarantined"]} >= {str(src / "sub-nan/func/sub-nan_task-rest_bold.nii.gz")}


@ON_RAY
def test_roi_tables_and_wrong_shapes(tmp_path) -> None:
    src = tmp_path / "tables"
    src.mkdir()
    rng = np.random.default_rng(0)
    header = "\t".join(f"roi{i}" for i in range(6))
    for i in range(3):
        x = rng.standard_normal((50, 6))  # time x ROIs with a label header (fMRIPrep/XCP-D style)
        np.savetxt(src / f"sub-{i}_timeseries.tsv", x, delimiter="\t", header=header, comments="")
    np.savetxt(
        src / "sub-9_timeseries.tsv",
        rng.standard_normal((50, 5)),
        delimiter="\t",
        header="\t".join(f"roi{i}" for i in range(5)),
        comments="",
    )
    np.save(src / "sub-7.npy", rng.standard_normal((6, 40)))  # ROIs x time, orientation from the ROI count
    (src / "sub-7.json").write_text(json.dumps({"RepetitionTime": 0.72}))
    out = str(tmp_path / "ds")
    result = ingest(str(src), out, IngestOptions(tr=1.5), progress=False)
    assert [q["scan_id"] for q in result.quarantined] == ["sub-9_timeseries"]
    assert "5 ROIs" in result.quarantined[0]["reason"]
    rows = read_rows(out)
    assert rows["sub-7"]["tr"] == 0.72 and rows["sub-0_timeseries"]["tr"] == 1.5
    assert rows["sub-7"]["series"].shape == (6, 40)
    assert read_manifest(out).atlas.roi_labels == tuple(f"roi{i}" for i in range(6))


def _nitime_data() -> Path:
    spec = importlib.util.find_spec("nitime")
    assert spec is not None, "nitime (real fMRI test data) is installed by `make test`"
    return Path(spec.submodule_search_locations[0]) / "data"


@ON_RAY
def test_real_fmri_from_nitime(tmp_path) -> None:
    """Two real 4-D BOLD runs and a real ROI time-series table shipped in the nitime wheel."""
    data = _nitime_data()
    src = tmp_path / "real"
    for i, name in enumerate(["fmri1.nii.gz", "fmri2.nii.gz"], start=1):
        func = src / f"sub-{i:02d}" / "func"
        func.mkdir(parents=True)
        shutil.copy(data / name, func / f"sub-{i:02d}_task-rest_bold.nii.gz")
    ref = nib.load(data / "fmri1.nii.gz")
    labels = np.zeros(ref.shape[:3], dtype=np.int16)
    labels[:5, :, :9], labels[5:, :, :9], labels[:5, :, 9:], labels[5:, :, 9:] = 1, 2, 3, 4
    nib.save(nib.Nifti1Image(labels, ref.affine), tmp_path / "atlas.nii.gz")
    out = str(tmp_path / "ds")
    result = ingest(str(src), out, IngestOptions(atlas=str(tmp_path / "atlas.nii.gz"), format="bids"), progress=False)
    assert result.exit_code == 0
    rows = read_rows(out)
    assert rows["sub-01_task-rest"]["tr"] == pytest.approx(1.35)  # from the NIfTI header
    for r in rows.values():
        np.testing.assert_allclose(
            r["series"], masker_reference(str(tmp_path / "atlas.nii.gz"), r["source"]), atol=1e-5, rtol=1e-6
        )

    table_dir = tmp_path / "table"
    table_dir.mkdir()
    shutil.copy(data / "fmri_timeseries.csv", table_dir / "sub-01_timeseries.csv")
    out2 = str(tmp_path / "ds2")
    assert ingest(str(table_dir), out2, IngestOptions(tr=1.89), progress=False).exit_code == 0
    row = read_rows(out2)["sub-01_timeseries"]
    import pandas as pd

    csv = pd.read_csv(data / "fmri_timeseries.csv")
    np.testing.assert_allclose(row["series"], csv.to_numpy().T, rtol=1e-6)
    assert read_manifest(out2).atlas.roi_labels[:3] == ("WM", "Vent", "Brain")


def test_killed_run_resumes_without_duplicates(ray_cluster: str, tmp_path) -> None:
    """The command killed part-way (SIGKILL: a real process), then rerun; both runs join the session's cluster."""
    src = write_bids(resolve(tmp_path / "bids"), SynthOptions(subjects=24, rois=8, frames=(40, 60)))
    out = tmp_path / "ds"
    cmd = [
        str(Path(sys.executable).parent / "brainjepa"),
        "ingest",
        src["source"],
        "--atlas",
        src["atlas"],
        "--labels",
        src["labels"],
        "--out",
        str(out),
        "--scans-per-shard",
        "1",
        "--workers",
        "1",
        "--quiet",
    ]
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    receipts = out / "_ingest" / "receipts"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(receipts.glob("*.json"))) < 3:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    # a worker of the killed driver may still commit the chunk it holds: wait until nothing changes
    done_before, stable_since = -1, time.time()
    while time.time() - stable_since < 3:
        now = len(list(receipts.glob("*.json")))
        if now != done_before:
            done_before, stable_since = now, time.time()
        time.sleep(0.2)
    total = len(discover(resolve(src["source"]), "bids"))
    assert 3 <= done_before < total, "the run should have been killed part-way"
    assert not (out / "manifest.json").exists()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    # only the unfinished chunks ran again
    assert f"{total - done_before} chunks run, {done_before} already done" in result.stdout
    rows = read_rows(str(out))  # asserts no duplicates
    assert len(rows) == total and read_manifest(str(out)).counts.scans == total


@ON_RAY
def test_unreachable_object_store_fails_clearly(tmp_path, monkeypatch) -> None:
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    table_dir = tmp_path / "t"
    table_dir.mkdir()
    np.save(table_dir / "a.npy", np.random.default_rng(0).standard_normal((4, 30)))
    with pytest.raises(StorageError, match=r"nowhere.*attempts.*reachable"):
        ingest(
            str(table_dir),
            "s3://nowhere/ds",
            IngestOptions(tr=1.0, orientation="rois-by-time", write_attempts=2, retry_delay=0.1),
            progress=False,
        )


def test_read_manifest_of_unfinished_dataset(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="rerun the same"):
        read_manifest(str(tmp_path))


def test_gzip_stream_reader_equals_nibabel(bids) -> None:
    from brainjepa_platform.data.extract import LabelExtractor, load_atlas

    atlas = load_atlas(Path(bids["atlas"]).read_bytes(), "atlas", Path(bids["labels"]).read_text())
    bold = Path(bids["source"]) / "sub-002/func/sub-002_task-rest_bold.nii.gz"
    series, tr = LabelExtractor(atlas, block_volumes=7).extract(bold.read_bytes())  # blocks that do not divide T
    uncompressed, _ = LabelExtractor(atlas).extract(gzip.decompress(bold.read_bytes()))
    np.testing.assert_array_equal(series, uncompressed)
    # the reference: nibabel loads the whole image, and each ROI is the mean of its label's voxels
    image, labels = nib.load(bold), np.asarray(nib.load(bids["atlas"]).dataobj)
    assert image.shape[:3] == labels.shape  # same grid: no resampling in the reference either
    data = np.asarray(image.dataobj, dtype=np.float64)
    expected = np.stack([data[labels == value].mean(axis=0) for value in atlas.values])
    assert series.shape == expected.shape == (len(atlas.values), image.shape[3])
    np.testing.assert_allclose(series, expected, rtol=1e-5, atol=1e-5)
    assert tr == pytest.approx(image.header.get_zooms()[3])


def synth_digest(opts: SynthOptions) -> str:
    """SHA-256 of every synthetic BIDS file's path and content (gzip members decompressed: their header has a time)."""
    h = hashlib.sha256()
    for parts, data in bids_files(opts):
        h.update("/".join(parts).encode())
        h.update(gzip.decompress(data) if parts[-1].endswith(".gz") else data)
    return h.hexdigest()


def test_synth_with_one_scan_per_subject_is_unchanged() -> None:
    # digests recorded before scans_per_subject was added (numpy 2.4.6, nibabel 5.4.2)
    first = SynthOptions(subjects=6, rois=12, frames=(40, 60), grid=(6, 6, 5))
    assert synth_digest(first) == "1ca83a3c986b793942039fccd40280e6f0acf51b90ac17f073f4a1852c645614"
    second = SynthOptions(subjects=5, rois=10, frames=(30, 50), trs=(2.0,), grid=(5, 5, 4), seed=7, scans_per_subject=1)
    assert synth_digest(second) == "04c4fa266a4b57e8b66988e6772b28835d9a0ebe42d157af817673396eaa1fa1"


def test_synth_sessions_per_subject_share_the_subjects_connectivity(tmp_path) -> None:
    """scans_per_subject=3: every subject has sessions 1-3 (no runs), one TR and one cohesion, scan lengths in
    the frames range; FC identifies subjects across the sessions (the sessions share a connectivity)."""
    from brainjepa_platform.data.extract import LabelExtractor, load_atlas

    opts = SynthOptions(subjects=6, rois=12, frames=(60, 90), grid=(8, 8, 6), seed=3, scans_per_subject=3)
    paths = write_bids(resolve(tmp_path), opts)
    specs = discover(resolve(tmp_path), "bids")
    assert sorted((s.subject, s.session, s.run) for s in specs) == [
        (f"{i:03d}", str(j), "") for i in range(1, 7) for j in (1, 2, 3)
    ]
    for subject in {s.subject for s in specs}:
        mine = [s for s in specs if s.subject == subject]
        assert len({s.tr for s in mine}) == 1 and len({s.phenotypes["cohesion"] for s in mine}) == 1
    assert len({s.phenotypes["cohesion"] for s in specs}) == 6 and {s.tr for s in specs} <= set(opts.trs)
    atlas = load_atlas(Path(paths["atlas"]).read_bytes(), "atlas", Path(paths["labels"]).read_text())
    series = [LabelExtractor(atlas).extract(Path(s.path).read_bytes())[0] for s in specs]
    assert all(60 <= x.shape[1] <= 90 for x in series) and len({x.shape[1] for x in series}) > 1
    subject, session = np.array([s.subject for s in specs]), np.array([s.session for s in specs])
    assert identification_accuracy(fc_features(zscore_segments(series)), subject, session) > 0.5  # chance 1/6
    with pytest.raises(ConfigError, match=r"scans_per_subject=0: expected >= 1"):
        SynthOptions(scans_per_subject=0)


@ON_RAY
def test_confound_regression_and_float16(bids, tmp_path) -> None:
    """fMRIPrep confounds next to the BOLD are regressed out with nilearn.signal.clean; float16 storage."""
    import pandas as pd
    from nilearn.signal import clean

    src = tmp_path / "fmriprep"
    shutil.copytree(bids["source"], src)
    bold = src / "sub-001/func/sub-001_task-rest_bold.nii.gz"
    n_frames = nib.load(bold).shape[3]
    rng = np.random.default_rng(0)
    confounds = pd.DataFrame({"global_signal": rng.standard_normal(n_frames), "csf": rng.standard_normal(n_frames)})
    confounds.to_csv(src / "sub-001/func/sub-001_task-rest_desc-confounds_timeseries.tsv", sep="\t", index=False)
    out = str(tmp_path / "ds")
    opts = IngestOptions(
        atlas=str(src / "atlas/atlas.nii.gz"),
        labels=str(src / "atlas/labels.tsv"),
        float16=True,
        clean=CleanConfig(detrend=True, confound_columns=("global_signal", "csf")),
    )
    result = ingest(str(src), out, opts, progress=False)
    # only sub-001 has a confounds file: the others are quarantined with a clear reason
    assert {q["scan_id"] for q in result.quarantined} == {s for s in read_rows_ids(bids) if s != "sub-001_task-rest"}
    assert all("no confounds file" in q["reason"] for q in result.quarantined)
    row = read_rows(out)["sub-001_task-rest"]
    raw = masker_reference(str(src / "atlas/atlas.nii.gz"), str(bold))
    expected = clean(raw.T, confounds=confounds.to_numpy(), detrend=True, standardize=False, t_r=row["tr"]).T
    np.testing.assert_allclose(row["series"], expected, atol=2e-3 * np.abs(expected).max())
    loc, paths = shard_locations(out)
    assert str(pq.read_schema(paths[0], filesystem=loc.fs).field("series").type) == "list<element: halffloat>"


def read_rows_ids(bids: dict[str, str]) -> set[str]:
    return {s.scan_id for s in discover(resolve(bids["source"]), "bids")}


@ON_RAY
def test_streamed_group_fc_and_gradients_from_dataset(bids, tmp_path) -> None:
    """Group FC streamed over the dataset equals an in-memory computation; `gradients` takes a dataset."""
    from brainjepa.gradients import GradientArtifact, GradientParams, group_fc
    from brainjepa_platform.data.cohort_fc import dataset_group_fc
    from brainjepa_platform.data.gradient_artifacts import GradientsRequest, run_gradients

    out = str(tmp_path / "ds")
    ingest(
        bids["source"],
        out,
        IngestOptions(atlas=bids["atlas"], labels=bids["labels"], scans_per_shard=2),
        progress=False,
    )
    rows = read_rows(out)
    fc, n = dataset_group_fc(out)
    assert n == len(rows)
    np.testing.assert_allclose(fc, group_fc([r["series"] for r in rows.values()]), atol=1e-6)
    summary = run_gradients(
        GradientsRequest(source=out, out=str(tmp_path / "g.npz"), params=GradientParams(n_components=4))
    )
    artifact = GradientArtifact.load(summary["artifact"])
    assert list(artifact.roi_labels) == list(read_manifest(out).atlas.roi_labels)
    assert artifact.provenance.n_scans == len(rows) and artifact.gradients.shape == (12, 4)
