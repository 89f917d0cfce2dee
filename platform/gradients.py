"""`brainjepa gradients`: FC matrix file -> versioned gradient artifact (and a picture).

Sources are, for now, one group FC matrix in a local file or ``file://`` URI (``.npy``, ``.csv``
or ``.tsv``); Parquet cohort datasets arrive with cohort ingestion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from brainjepa.gradients import (
    GradientArtifact,
    GradientParams,
    GradientProvenance,
    gradient_artifact,
)

MATRIX_SUFFIXES = {".npy": None, ".csv": ",", ".tsv": "\t"}
NOT_YET = "an ingested dataset is given by its folder or URI (the one holding manifest.json)"


def local_path(location: str | Path) -> Path:
    """A local path or ``file://`` URI as a Path; other schemes are refused for now."""
    text = str(location)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive
        raise ValueError(f"{text}: only local paths and file:// URIs are supported for now")
    return Path(text)


def _read_matrix(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        return np.loadtxt(path, delimiter=MATRIX_SUFFIXES[suffix], dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read a numeric matrix: {exc}") from exc


def load_fc_matrix(source: str | Path) -> np.ndarray:
    """Read a square, finite FC matrix; every error names the file."""
    path = local_path(source)
    if path.is_dir() or path.suffix.lower() == ".parquet":
        raise ValueError(f"{path}: {NOT_YET}; give an FC matrix file (.npy, .csv or .tsv)")
    if path.suffix.lower() not in MATRIX_SUFFIXES:
        raise ValueError(f"{path}: SOURCE must be an FC matrix file (.npy, .csv or .tsv); {NOT_YET}")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    fc = _read_matrix(path)
    if fc.ndim != 2 or fc.shape[0] != fc.shape[1]:
        raise ValueError(f"{path}: FC matrix must be square (R x R), got shape {fc.shape}")
    if not np.issubdtype(fc.dtype, np.number):
        raise ValueError(f"{path}: FC matrix must be numeric, got dtype {fc.dtype}")
    bad = np.argwhere(~np.isfinite(fc))
    if len(bad):
        raise ValueError(f"{path}: FC matrix has {len(bad)} NaN or infinite entries (first at row {bad[0][0]}, "
                         f"column {bad[0][1]})")
    return fc.astype(np.float64)


def read_roi_labels(location: str | Path, n_rois: int) -> list[str]:
    """One label per line; Schaefer lookup-table lines (``index<TAB>label<TAB>...``) give their label."""
    path = local_path(location)
    if not path.is_file():
        raise ValueError(f"{path}: no such ROI label file")
    labels = []
    for line in path.read_text().splitlines():
        fields = [f.strip() for f in line.replace(",", "\t").split("\t")]
        if not fields[0]:
            continue
        labels.append(fields[1] if len(fields) > 1 and fields[0].isdigit() else line.strip())
    if len(labels) != n_rois:
        raise ValueError(f"{path}: {len(labels)} ROI labels for a {n_rois} x {n_rois} FC matrix")
    return labels


@dataclass
class GradientsRequest:
    """Everything `brainjepa gradients` was asked to do."""

    source: str
    out: str
    params: GradientParams
    labels: str | None = None
    align_to: str | None = None
    atlas: str = "unspecified"
    cohort: str = ""
    plot: str | None = None


def is_dataset(source: str) -> bool:
    """True when ``source`` is an ingested dataset (a folder or prefix with manifest.json)."""
    from brainjepa_platform.storage import exists, resolve

    return not str(source).lower().endswith(tuple(MATRIX_SUFFIXES)) and exists(resolve(source).child("manifest.json"))


def dataset_artifact(request: GradientsRequest) -> GradientArtifact:
    """Group FC streamed over every scan of an ingested dataset (Ray Data), then the gradients."""
    from brainjepa_platform.cluster import init_ray
    from brainjepa_platform.cohort_fc import dataset_group_fc
    from brainjepa_platform.ingest import read_manifest

    init_ray()
    manifest = read_manifest(request.source)
    fc, n_scans = dataset_group_fc(request.source)
    atlas = manifest["atlas"]["name"] if request.atlas == "unspecified" else request.atlas
    provenance = GradientProvenance(atlas=atlas, source=str(request.source), n_scans=n_scans,
                                    cohort=request.cohort or f"dataset {manifest['dataset']}, all scans")
    reference = GradientArtifact.load(local_path(request.align_to)) if request.align_to else None
    return gradient_artifact(fc, request.params, provenance, manifest["atlas"]["roi_labels"], reference,
                             request.align_to)


def build_artifact(request: GradientsRequest) -> GradientArtifact:
    """Read the FC matrix or stream the dataset (and labels, and reference), compute and align the gradients."""
    if is_dataset(request.source):
        return dataset_artifact(request)
    fc = load_fc_matrix(request.source)
    labels = read_roi_labels(request.labels, len(fc)) if request.labels else None
    reference = GradientArtifact.load(local_path(request.align_to)) if request.align_to else None
    source_uri = local_path(request.source).resolve().as_uri()
    provenance = GradientProvenance(atlas=request.atlas, source=source_uri,
                                    cohort=request.cohort or f"group FC matrix {local_path(request.source).name}")
    reference_uri = local_path(request.align_to).resolve().as_uri() if request.align_to else None
    return gradient_artifact(fc, request.params, provenance, labels, reference, reference_uri)


def run_gradients(request: GradientsRequest) -> dict[str, object]:
    """Build, save (and plot) the artifact; returns a JSON-ready summary."""
    artifact = build_artifact(request)
    out = local_path(request.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    artifact.save(out)
    summary: dict[str, object] = {
        "artifact": str(out),
        "n_rois": artifact.n_rois,
        "n_components": artifact.params.n_components,
        "eigenvalues": [round(float(v), 6) for v in artifact.eigenvalues],
        "params": artifact.metadata()["params"],
        "provenance": artifact.metadata()["provenance"],
    }
    if request.plot:
        from brainjepa_platform.plots import plot_gradients

        plot = local_path(request.plot)
        plot.parent.mkdir(parents=True, exist_ok=True)
        summary["plot"] = str(plot_gradients(artifact.gradients, artifact.eigenvalues, artifact.roi_labels, plot))
    return summary
