"""``brainjepa synth``: a synthetic cohort as a BIDS tree of 4-D NIfTI files with an atlas, or ingested.

Subjects get different TRs and scan lengths; some have two sessions or two runs. Phenotypes
(age, sex, coupling) are known functions of connectivity (see brainjepa.synthetic), and are written
to participants.tsv so ingestion joins them. With ``scans_per_subject`` > 1 every subject has that many
sessions sharing its own connectivity (``brainjepa.synthetic.fingerprint_cohort``: subject
fingerprinting), and the phenotype is that function's ``cohesion``.
"""

from __future__ import annotations

import gzip
import io
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from brainjepa.config import ConfigError
from brainjepa.synthetic import fingerprint_cohort, synthetic_cohort
from brainjepa_platform.data.outputs import SYNTH_NAME, check_output, delete_files, replace_local_dir
from brainjepa_platform.storage import Location, ensure_bucket, list_files, resolve, write_bytes

NETWORKS = ("Vis", "SomMot", "DorsAttn", "SalVentAttn", "Limbic", "Cont", "Default")


@dataclass
class SynthOptions:
    subjects: int = 16
    rois: int = 24
    frames: tuple[int, int] = (120, 200)
    trs: tuple[float, ...] = (0.8, 1.0, 2.0)
    grid: tuple[int, int, int] = (12, 12, 10)
    seed: int = 0
    scans_per_subject: int = 1
    """1: one scan per subject (every 4th with two sessions, every 5th with two runs, each drawn on its own);
    more: that many sessions (ses-1, ses-2, ...) per subject, each subject with its own stable connectivity."""

    def __post_init__(self) -> None:
        if self.scans_per_subject < 1:
            raise ConfigError(f"scans_per_subject={self.scans_per_subject}: expected >= 1 (sessions per subject)")


@dataclass
class SynthScan:
    """One scan of the synthetic cohort: subject index (``sub-001`` is 0), BIDS session and run labels."""

    subject: int
    session: str
    run: str
    series: np.ndarray
    """(R, T) ROI time series."""
    tr: float


def roi_labels(n_rois: int, n_networks: int = 7) -> list[str]:
    """Schaefer-style names, network order: ``7Networks_LH_Vis_1`` ..."""
    network = np.arange(n_rois) * n_networks // n_rois
    labels, counts = [], {}
    for r in range(n_rois):
        net = NETWORKS[network[r] % len(NETWORKS)]
        counts[net] = counts.get(net, 0) + 1
        labels.append(f"7Networks_{'LH' if r % 2 == 0 else 'RH'}_{net}_{counts[net]}")
    return labels


def atlas_volume(grid: tuple[int, int, int], n_rois: int) -> np.ndarray:
    """Integer label image: an ellipsoidal 'brain' cut into ``n_rois`` contiguous parcels (0 outside)."""
    idx = np.indices(grid).reshape(3, -1).T.astype(float)
    centre = (np.asarray(grid) - 1) / 2
    inside = (((idx - centre) / (np.asarray(grid) / 2)) ** 2).sum(axis=1) <= 1.0
    order = np.lexsort((idx[:, 2], idx[:, 1], idx[:, 0]))
    order = order[inside[order]]
    labels = np.zeros(idx.shape[0], dtype=np.int16)
    labels[order] = 1 + np.arange(order.size) * n_rois // order.size
    return labels.reshape(grid)


def _nifti_bytes(data: np.ndarray, affine: np.ndarray, tr: float | None = None) -> bytes:
    img = nib.Nifti1Image(data, affine)
    if tr is not None:
        img.header.set_xyzt_units("mm", "sec")
        zooms = img.header.get_zooms()
        img.header.set_zooms((*zooms[:3], tr))
    return gzip.compress(img.to_bytes(), compresslevel=1)


def _scan_layout(i: int) -> list[tuple[str, str]]:
    """(session, run) labels: every 4th subject has two sessions, every 5th two runs."""
    if i % 4 == 3:
        return [("1", ""), ("2", "")]
    if i % 5 == 4:
        return [("", "1"), ("", "2")]
    return [("", "")]


def varied_scans(opts: SynthOptions) -> tuple[list[SynthScan], list[str]]:
    """One scan per subject, some with two sessions or runs, each scan an independent draw of
    :func:`synthetic_cohort`; and the participants.tsv lines (age, sex, coupling of each subject's first scan)."""
    layouts = [_scan_layout(i) for i in range(opts.subjects)]
    n_scans = sum(len(x) for x in layouts)
    cohort = synthetic_cohort(n_scans, opts.rois, n_frames=opts.frames, tr=opts.trs, seed=opts.seed)
    phenotypes = cohort.phenotypes
    scans: list[SynthScan] = []
    rows = ["participant_id\tage\tsex\tcoupling"]
    for i, layout in enumerate(layouts):
        first = len(scans)
        rows.append(
            f"sub-{i + 1:03d}\t{phenotypes['age'][first]:.2f}\t{'MF'[phenotypes['sex'][first]]}"
            f"\t{phenotypes['coupling'][first]:.4f}"
        )
        for ses, run in layout:
            scans.append(SynthScan(i, ses, run, cohort.series[len(scans)], float(cohort.tr[len(scans)])))
    return scans, rows


def repeated_scans(opts: SynthOptions) -> tuple[list[SynthScan], list[str]]:
    """``scans_per_subject`` sessions per subject from :func:`fingerprint_cohort`; and the participants.tsv
    lines (``cohesion``, constant within a subject).

    Each subject gets one TR of ``opts.trs`` and each scan a length in ``opts.frames``. The cohort is drawn once
    per distinct TR with the same seed (its random draws do not depend on the TR), so a subject's
    connectivity, the cohort's ROI baselines and the per-scan session effects do not depend on which TR it
    got; each scan is the first frames of its series at its subject's TR.
    """
    k = opts.scans_per_subject
    rng = np.random.default_rng(opts.seed + 2)
    subject_tr = [opts.trs[j] for j in rng.integers(len(opts.trs), size=opts.subjects)]
    frames = rng.integers(opts.frames[0], opts.frames[1] + 1, size=(opts.subjects, k))
    cohorts = {
        tr: fingerprint_cohort(opts.subjects, opts.rois, k, n_frames=opts.frames[1], tr=tr, seed=opts.seed)
        for tr in set(subject_tr)
    }
    scans: list[SynthScan] = []
    rows = ["participant_id\tcohesion"]
    for i, tr in enumerate(subject_tr):
        cohort = cohorts[tr]
        series = cohort.series[i * k : (i + 1) * k]
        scans += [SynthScan(i, str(j + 1), "", s[:, : frames[i, j]], float(tr)) for j, s in enumerate(series)]
        rows.append(f"sub-{i + 1:03d}\t{cohort.phenotypes['cohesion'][i * k]:.4f}")
    return scans, rows


def bids_files(opts: SynthOptions) -> Iterator[tuple[tuple[str, ...], bytes]]:
    """(path parts, content) of every file of the synthetic BIDS tree, one at a time."""
    scans, participants = (varied_scans if opts.scans_per_subject == 1 else repeated_scans)(opts)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = -np.asarray(opts.grid) * 1.5
    labels = atlas_volume(opts.grid, opts.rois)
    rng = np.random.default_rng(opts.seed + 1)
    yield ("atlas", "atlas.nii.gz"), _nifti_bytes(labels, affine)
    names = roi_labels(opts.rois)
    yield ("atlas", "labels.tsv"), ("index\tname\n" + "".join(f"{i + 1}\t{n}\n" for i, n in enumerate(names))).encode()
    yield ("dataset_description.json",), json.dumps({"Name": SYNTH_NAME, "BIDSVersion": "1.9.0"}).encode()
    for scan in scans:
        sub, ses, run = f"{scan.subject + 1:03d}", scan.session, scan.run
        parts = [f"sub-{sub}"] + ([f"ses-{ses}"] if ses else []) + ["task-rest"] + ([f"run-{run}"] if run else [])
        folder = (f"sub-{sub}", *([f"ses-{ses}"] if ses else []), "func")
        stem = "_".join(parts) + "_bold"
        voxels = scan.series[np.clip(labels.astype(int) - 1, 0, None)]  # (x, y, z, T)
        voxels = voxels * (labels > 0)[..., None] + rng.normal(0, 2.0, voxels.shape) * (labels > 0)[..., None]
        yield (*folder, stem + ".nii.gz"), _nifti_bytes(voxels.astype(np.float32), affine, scan.tr)
        yield (*folder, stem + ".json"), json.dumps({"RepetitionTime": scan.tr}).encode()
    yield ("participants.tsv",), ("\n".join(participants) + "\n").encode()


def bids_paths(out: Location) -> dict[str, str]:
    """The paths to pass to ``brainjepa ingest`` for the synthetic BIDS tree at ``out``."""
    return {
        "source": out.uri,
        "atlas": out.child("atlas", "atlas.nii.gz").uri,
        "labels": out.child("atlas", "labels.tsv").uri,
    }


def _write_files(out: Location, opts: SynthOptions) -> set[str]:
    ensure_bucket(out)
    written = set()
    for parts, data in bids_files(opts):
        write_bytes(out.child(*parts), data)
        written.add("/".join(parts))
    return written


def write_bids(out: Location, opts: SynthOptions) -> dict[str, str]:
    """A BIDS tree with atlas/; returns the paths to pass to ``brainjepa ingest``."""
    _write_files(out, opts)
    return bids_paths(out)


def replace_bids(out: Location, opts: SynthOptions, overwrite: bool = False) -> dict[str, str]:
    """:func:`write_bids` for ``brainjepa synth``: an existing synthetic tree at ``out`` is an error unless
    ``overwrite``, and is then replaced whole (locally: a sibling folder swapped in; on S3: the new files
    written over it, then the old tree's other files deleted); anything else there is always an error."""
    if check_output(out, overwrite, "synthetic") == "missing":
        return write_bids(out, opts)
    if out.is_local:
        replace_local_dir(out, lambda staging: _write_files(staging, opts))
        return bids_paths(out)
    written = _write_files(out, opts)
    root = out.path.rstrip("/") + "/"
    delete_files([f for f in list_files(out) if f.path.removeprefix(root) not in written])
    return bids_paths(out)


def write_parquet(out: str, opts: SynthOptions, progress: bool = False, overwrite: bool = False) -> int:
    """Synthesise a BIDS tree in a temporary folder and ingest it into ``out`` (the real NIfTI path);
    an existing dataset at ``out`` is an error unless ``overwrite`` (see :func:`ingest`)."""
    from brainjepa_platform.data.ingestion import IngestOptions, ingest

    check_output(resolve(out), overwrite, "dataset")  # before minutes of synthesis, not after
    with tempfile.TemporaryDirectory(prefix="brainjepa-synth-") as tmp:
        paths = write_bids(resolve(tmp), opts)
        result = ingest(
            paths["source"],
            out,
            IngestOptions(atlas=paths["atlas"], labels=paths["labels"], dataset="synthetic", overwrite=overwrite),
            progress=progress,
        )
    return result.manifest.counts.scans


def synth_summary(paths: dict[str, str]) -> str:
    buf = io.StringIO()
    buf.write(f"Wrote a BIDS tree at {paths['source']}\n")
    buf.write(
        f"  ingest it with: brainjepa ingest {paths['source']} --atlas {paths['atlas']} "
        f"--labels {paths['labels']} --out OUT_URI\n"
    )
    return buf.getvalue()
