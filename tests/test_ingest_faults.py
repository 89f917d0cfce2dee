"""Data-correctness faults (#16 items 1-4): mixed-TR cohorts, an odd ROI table, BIDS entities, overwriting.

Each test builds the input that used to lose or merge scans silently and checks what happens now.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

from brainjepa.model import ModelConfig
from brainjepa.preprocess import RobustStats
from brainjepa_platform.cli.main import main
from brainjepa_platform.data.ingestion import IngestOptions, ingest, output_generation
from brainjepa_platform.data.manifest import Manifest, read_manifest
from brainjepa_platform.data.outputs import OutputExistsError
from brainjepa_platform.data.sources import discover_inputs, entities
from brainjepa_platform.data.windows import StreamSpec, sample_windows
from brainjepa_platform.storage import resolve
from brainjepa_platform.train import streaming
from brainjepa_platform.train.config import DataConfig
from brainjepa_platform.train.streaming import check_dataset

RNG = np.random.default_rng(0)


def write_table(folder: Path, name: str, frames: int, rois: int, tr: float | None = None) -> None:
    """A time x ROIs TSV with a header of labels (fMRIPrep/XCP-D style), and a sidecar TR if given."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(
        folder / f"{name}.tsv",
        RNG.standard_normal((frames, rois)),
        delimiter="\t",
        header="\t".join(f"roi{i}" for i in range(rois)),
        comments="",
    )
    if tr is not None:
        (folder / f"{name}.json").write_text(json.dumps({"RepetitionTime": tr}))


# --- item 1: scans of equal duration at different TRs ------------------------------------------------------
def test_mixed_tr_cohort_is_checked_per_scan(ray_cluster, tmp_path, monkeypatch) -> None:
    src = tmp_path / "tables"
    write_table(src, "sub-hcp", 150, 6, tr=0.72)  # 108 s
    write_table(src, "sub-abide", 54, 6, tr=2.0)  # 108 s
    write_table(src, "sub-short", 30, 6, tr=2.0)  # 60 s
    out = str(tmp_path / "ds")
    ingest(str(src), out, IngestOptions(), progress=False)
    manifest = read_manifest(out)
    assert sum(e.scans for e in manifest.scan_lengths) == 3
    data = DataConfig(target_tr=2.0)
    model = ModelConfig(size="tiny", n_rois=6, frames=48, patch=8, n_gradients=5)  # a 94 s window
    # the warning as the module logs it (whatever another test or library did to logging's configuration)
    warned: list[str] = []
    monkeypatch.setattr(streaming._log, "warning", lambda msg, *args: warned.append(msg % args))
    fit = check_dataset(out, manifest, model, data)
    assert (fit.scans, fit.usable) == (3, 2)
    assert any("1 of the 3 scans" in line and "skipped" in line for line in warned), warned
    long_model = ModelConfig(size="tiny", n_rois=6, frames=64, patch=8, n_gradients=5)  # 126 s
    with pytest.raises(ValueError, match=r"none of its 3 scans.*longest spans 107s"):
        check_dataset(out, manifest, long_model, data)
    # a manifest written before per-scan lengths were recorded: refused only when no scan can fit
    old = Manifest.from_json({k: v for k, v in manifest.to_json().items() if k != "scan_lengths"}, "old.json")
    assert old.scan_lengths is None and "scan_lengths" not in old.to_json()
    assert check_dataset(out, old, model, data).usable is None
    huge_model = ModelConfig(size="tiny", n_rois=6, frames=160, patch=8, n_gradients=5)  # 318 s > 149 x 2.0 s
    with pytest.raises(ValueError, match="none of its 3 scans"):
        check_dataset(out, old, huge_model, data)


def test_window_sampler_skips_scans_shorter_than_the_window() -> None:
    long, short = np.arange(2 * 150, dtype=np.float32), np.arange(2 * 30, dtype=np.float32)
    batch = {
        "subject": np.array(["a", "b"]),
        "tr": np.array([0.72, 2.0]),
        "n_rois": np.array([2, 2]),
        "n_frames": np.array([150, 30]),
        "series": np.array([long, short], dtype=object),
    }
    spec = StreamSpec(2, 48, 2.0, RobustStats(np.zeros(2), np.ones(2)), False, 0.0, 0, windows_per_scan=3)
    assert sample_windows(batch, spec)["series"].shape == (3, 2, 48)


# --- item 2: the ROI count is the majority's, not the first file's ---------------------------------------------
def test_odd_roi_table_is_quarantined_not_the_majority(ray_cluster, tmp_path, capsys) -> None:
    src = tmp_path / "tables"
    write_table(src, "a-odd", 60, 90)  # sorts first
    for i in range(3):
        write_table(src, f"sub-{i}", 60, 94)
    write_table(src / "site1", "sub-dup", 60, 94)  # two files with one scan id: both quarantined, named
    write_table(src / "site2", "sub-dup", 60, 94)
    out = str(tmp_path / "ds")
    assert main(["ingest", str(src), "--out", out, "--tr", "1.0", "--quiet"]) == 3
    manifest = read_manifest(out)
    assert manifest.atlas.n_rois == 94 and manifest.counts.scans == 3
    assert "majority" in manifest.atlas.decided_by
    report = json.loads(Path(out, "quarantine.json").read_text())["quarantined"]
    assert sorted(q["scan_id"] for q in report) == ["a-odd", "sub-dup", "sub-dup"]
    assert "90 ROIs" in next(q["reason"] for q in report if q["scan_id"] == "a-odd")
    err = capsys.readouterr().err
    assert "duplicate scan" in err and "WARNING: most" not in err
    # the atlas given by --labels decides; when it leaves most inputs out, the summary says so loudly
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"roi{i}\n" for i in range(90)))
    out2 = str(tmp_path / "ds2")
    assert main(["ingest", str(src), "--out", out2, "--tr", "1.0", "--labels", str(labels), "--quiet"]) == 3
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("WARNING: most")]
    assert len(warning) == 1 and "5 of 6" in warning[0] and "90 ROIs" in warning[0]
    assert "labels file" in warning[0]


# --- item 3: every BIDS entity, each file its own scan --------------------------------------------------------
def test_bids_entities_keep_every_file_as_a_scan(tmp_path) -> None:
    assert entities("sub-01_ses-2_task-rest_acq-mb_echo-1_foo-bar_space-MNI_desc-preproc_bold.nii.gz") == {
        "sub": "01",
        "ses": "2",
        "task": "rest",
        "acq": "mb",
        "echo": "1",
        "space": "MNI",
        "desc": "preproc",
        "foo": "bar",
    }
    (tmp_path / "dataset_description.json").write_text("{}")
    func = tmp_path / "sub-01" / "func"
    func.mkdir(parents=True)
    names = [
        "sub-01_task-rest_acq-mb_run-1_bold.nii.gz",
        "sub-01_task-rest_acq-sb_run-1_bold.nii.gz",
        "sub-01_task-rest_run-1_echo-1_bold.nii.gz",
        "sub-01_task-rest_run-1_echo-2_bold.nii.gz",
        # fMRIPrep: desc-preproc supersedes the other descs of its run (listed as ignored)
        "sub-01_task-rest_run-2_space-MNI_desc-preproc_bold.nii.gz",
        "sub-01_task-rest_run-2_space-MNI_desc-smoothAROMAnonaggr_bold.nii.gz",
        # the same entities twice: a genuine duplicate, both quarantined
        "sub-01_task-rest_run-3_bold.nii",
        "sub-01_task-rest_run-3_bold.nii.gz",
    ]
    for name in names:
        (func / name).write_bytes(b"")
    (func / "sub-01_task-rest_run-1_desc-confounds_timeseries.tsv").write_text("a\n1\n")
    found = discover_inputs(resolve(tmp_path), "auto", tr=2.0)
    ids = [s.scan_id for s in found.specs]
    assert ids == [
        "sub-01_task-rest_acq-mb_run-1",
        "sub-01_task-rest_acq-sb_run-1",
        "sub-01_task-rest_run-1_echo-1",
        "sub-01_task-rest_run-1_echo-2",
        "sub-01_task-rest_run-2_space-MNI",
    ]
    assert all(
        s.confounds and s.confounds.endswith("run-1_desc-confounds_timeseries.tsv")
        for s in found.specs
        if "echo" in s.scan_id
    )
    assert [q["path"].rsplit("/", 1)[-1] for q in found.ignored] == [names[5]]
    assert sorted(q["path"].rsplit("/", 1)[-1] for q in found.quarantined) == sorted(names[6:])
    assert all("duplicate scan" in q["reason"] for q in found.quarantined)


def test_missing_source_says_it_does_not_exist(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover_inputs(resolve(tmp_path / "nowhere"), "auto")


# --- item 4: no silent overwrite; --overwrite replaces atomically; unfinished ingests resume ---------------------
def _files(uri: str, folder: str) -> set[str]:
    loc = resolve(uri).child(folder)
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True, allow_not_found=True))
    return {i.base_name for i in infos if i.type == pafs.FileType.File}


@pytest.mark.parametrize("store", ["local", "s3"])
def test_ingest_refuses_to_overwrite_and_replaces_with_overwrite(ray_cluster, s3_endpoint, tmp_path, store) -> None:
    src = tmp_path / "tables"
    for i in range(3):
        write_table(src, f"sub-{i}", 40, 5)
    out = str(tmp_path / "ds") if store == "local" else f"s3://faults/ds-{tmp_path.name}"
    opts = IngestOptions(tr=1.0, scans_per_shard=1)
    first = ingest(str(src), out, opts, progress=False)
    old_shards = _files(out, "data")
    assert len(old_shards) == 3 and first.manifest.generation == ""
    with pytest.raises(OutputExistsError, match=rf"{out}.*already holds an ingested dataset.*--overwrite"):
        ingest(str(src), out, opts, progress=False)
    # an unfinished ingest (no manifest yet) of the same command resumes without --overwrite
    resolve(out).fs.delete_file(resolve(out).child("manifest.json").path)
    resumed = ingest(str(src), out, opts, progress=False)
    assert (resumed.chunks_run, resumed.chunks_skipped) == (0, 3)
    # --overwrite: the new dataset only, none of the old shards left behind
    (src / "sub-0.tsv").unlink()
    write_table(src, "sub-9", 40, 5)
    opts.overwrite = True
    replaced = ingest(str(src), out, opts, progress=False)
    manifest = read_manifest(out)
    assert replaced.chunks_run == 3 and manifest.generation
    assert _files(out, "data") == {s.path.rsplit("/", 1)[-1] for s in manifest.shards}
    assert not _files(out, "data") & old_shards
    assert len(_files(out, "_ingest")) == 6  # a receipt and a statistics sample per chunk, nothing pending


def test_interrupted_overwrite_resumes_its_generation(tmp_path) -> None:
    out = resolve(tmp_path / "ds")
    out.fs.create_dir(out.path)
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps({"generation": ""}))
    with pytest.raises(OutputExistsError):
        output_generation(out, overwrite=False)
    token = output_generation(out, overwrite=True)
    assert token and output_generation(out, overwrite=True) == token  # the rerun continues the same replacement
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps({"generation": token}))  # that one finished
    assert output_generation(out, overwrite=True) not in ("", token)


def test_synth_refuses_to_overwrite_and_replaces_whole(tmp_path, capsys) -> None:
    out = tmp_path / "cohort"
    assert main(["synth", "--out", str(out), "--subjects", "5", "--rois", "8"]) == 0
    assert (out / "sub-005").is_dir()
    assert main(["synth", "--out", str(out), "--subjects", "2", "--rois", "8"]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err
    assert main(["synth", "--out", str(out), "--subjects", "2", "--rois", "8", "--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("sub-*")) == ["sub-001", "sub-002"]
    assert not list(tmp_path.glob(".cohort*"))  # no staging or replaced folder left
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("not brainjepa's")
    assert main(["synth", "--out", str(other), "--overwrite"]) == 2
    assert "did not write" in capsys.readouterr().err and (other / "notes.txt").exists()
