"""`brainjepa gradients`: FC matrix file or ingested dataset -> versioned gradient artifact (and a picture).

Sources: one group FC matrix in a local file or ``file://`` URI (``.npy``, ``.csv`` or ``.tsv``), or
an ingested dataset (path, ``file://`` or ``s3://``), whose group FC is streamed over its scans with
Ray Data. Every input is checked (ROI count against the number of gradients, labels, alignment
reference, output path) before that Ray work starts; by default an atlas of R ROIs gets
min(30, R-1) gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

import numpy as np

from brainjepa.gradients import (
    GradientArtifact,
    GradientParams,
    GradientProvenance,
    check_params,
    default_components,
    gradient_artifact,
)

if TYPE_CHECKING:
    from brainjepa_platform.data.manifest import Manifest

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
    if not path.exists():
        raise ValueError(
            f"{source}: no such file or folder (SOURCE is an FC matrix file or an ingested dataset, "
            "the folder holding manifest.json)"
        )
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
        raise ValueError(
            f"{path}: FC matrix has {len(bad)} NaN or infinite entries (first at row {bad[0][0]}, column {bad[0][1]})"
        )
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
    auto_components: bool = False
    """``params.n_components`` is an upper bound: atlases with fewer ROIs get R-1 gradients (with a note)."""


@dataclass
class GradientsPlan:
    """What will be computed, settled from the source's ROI count before any heavy work (group FC on Ray)."""

    params: GradientParams
    n_rois: int
    manifest: Manifest | None = None
    """The dataset's manifest (dataset sources)."""
    fc: np.ndarray | None = None
    """The FC matrix (matrix sources)."""
    labels: list[str] | None = None
    reference: GradientArtifact | None = None
    note: str | None = None


def is_dataset(source: str) -> bool:
    """True when ``source`` is an ingested dataset (a folder or prefix with manifest.json)."""
    from brainjepa_platform.storage import exists, resolve

    return not str(source).lower().endswith(tuple(MATRIX_SUFFIXES)) and exists(resolve(source).child("manifest.json"))


def settle_components(request: GradientsRequest, n_rois: int) -> tuple[GradientParams, str | None]:
    """The parameters for ``n_rois`` ROIs, checked; with ``auto_components`` the number of gradients is
    at most R-1, and a note says so when that is fewer than asked."""
    params, note = request.params, None
    if request.auto_components and params.n_components >= n_rois:
        params = replace(params, n_components=min(params.n_components, default_components(n_rois)))
        note = (
            f"{n_rois} ROIs give at most {n_rois - 1} gradients: computing {params.n_components} "
            f"(--n-components to choose)"
        )
    try:
        check_params(n_rois, params.n_components, params.kernel, params.sparsity, params.alpha)
    except ValueError as exc:
        raise ValueError(f"{request.source}: {exc}") from None
    return params, note


def plan_gradients(request: GradientsRequest) -> GradientsPlan:
    """Read the source's ROI count (manifest or matrix), labels and alignment reference, settle and check
    the parameters and the output path: every input error surfaces here, before any Ray work."""
    if is_dataset(request.source):
        from brainjepa_platform.data.manifest import read_manifest

        manifest = read_manifest(request.source)
        plan = GradientsPlan(
            request.params, manifest.atlas.n_rois, manifest=manifest, labels=list(manifest.atlas.roi_labels)
        )
    else:
        fc = load_fc_matrix(request.source)
        plan = GradientsPlan(
            request.params, len(fc), fc=fc, labels=read_roi_labels(request.labels, len(fc)) if request.labels else None
        )
    plan.params, plan.note = settle_components(request, plan.n_rois)
    if request.align_to:
        plan.reference = GradientArtifact.load(local_path(request.align_to))
        want = (plan.n_rois, plan.params.n_components)
        if plan.reference.gradients.shape != want:
            raise ValueError(
                f"--align-to {request.align_to}: {plan.reference.gradients.shape[0]} ROIs x "
                f"{plan.reference.gradients.shape[1]} gradients, these will be {want[0]} x {want[1]}"
            )
    out = local_path(request.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the artifact's file name (.npz)")
    out.parent.mkdir(parents=True, exist_ok=True)
    return plan


def build_artifact(request: GradientsRequest, plan: GradientsPlan) -> GradientArtifact:
    """The gradients of the planned source: the FC matrix, or the group FC streamed over every scan of an
    ingested dataset (Ray Data); aligned to the reference when one was given."""
    reference_uri = local_path(request.align_to).resolve().as_uri() if request.align_to else None
    if plan.manifest is not None:
        from brainjepa_platform.cluster.connect import init_ray
        from brainjepa_platform.data.cohort_fc import dataset_group_fc

        init_ray()
        fc, n_scans = dataset_group_fc(request.source)
        atlas = plan.manifest.atlas.name if request.atlas == "unspecified" else request.atlas
        provenance = GradientProvenance(
            atlas=atlas,
            source=str(request.source),
            n_scans=n_scans,
            cohort=request.cohort or f"dataset {plan.manifest.dataset}, all scans",
        )
        return gradient_artifact(fc, plan.params, provenance, plan.labels, plan.reference, request.align_to)
    source = local_path(request.source)
    provenance = GradientProvenance(
        atlas=request.atlas, source=source.resolve().as_uri(), cohort=request.cohort or f"group FC matrix {source.name}"
    )
    return gradient_artifact(plan.fc, plan.params, provenance, plan.labels, plan.reference, reference_uri)


def run_gradients(request: GradientsRequest) -> dict[str, object]:
    """Plan (every check), build, save (and plot) the artifact; returns a JSON-ready summary."""
    plan = plan_gradients(request)
    artifact = build_artifact(request, plan)
    out = local_path(request.out)
    artifact.save(out)
    summary: dict[str, object] = {
        "artifact": str(out),
        "n_rois": artifact.n_rois,
        "n_components": artifact.params.n_components,
        "eigenvalues": [round(float(v), 6) for v in artifact.eigenvalues],
        "params": artifact.metadata()["params"],
        "provenance": artifact.metadata()["provenance"],
    }
    if plan.note:
        summary["note"] = plan.note
    if request.plot:
        from brainjepa_platform.plots import plot_gradients

        plot = local_path(request.plot)
        plot.parent.mkdir(parents=True, exist_ok=True)
        summary["plot"] = str(plot_gradients(artifact.gradients, artifact.eigenvalues, artifact.roi_labels, plot))
    return summary
