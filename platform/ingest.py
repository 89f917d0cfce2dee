"""Cohort ingestion: inputs -> Parquet shards + manifest in object storage, as a Ray Data pipeline.

Each chunk of scans (a fixed slice of the sorted scan list, ~128 MB of output) is one Ray Data row
handled by a pool of ``ChunkIngestor`` actors; a chunk writes its shard, a statistics sample and
then a receipt. The driver writes the quarantine report and, last, the manifest.
"""

from __future__ import annotations

import io
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from brainjepa_platform.cluster import init_ray
from brainjepa_platform.extract import (
    Atlas,
    BadInput,
    CleanConfig,
    LabelExtractor,
    clean,
    load_atlas,
    read_confounds,
    read_table,
    validate,
)
from brainjepa_platform.shards import (
    ChunkReceipt,
    ScanRow,
    build_manifest,
    chunk_name,
    commit_chunk,
    dataset_schema,
    load_receipt,
    phenotype_field_names,
    receipt_exists,
    rows_to_table,
    stats_sample,
)
from brainjepa_platform.sources import ScanSpec, discover, phenotype_columns
from brainjepa_platform.storage import Location, ensure_bucket, read_bytes, resolve, write_json

EXIT_QUARANTINED = 3


@dataclass
class IngestOptions:
    """Everything ``brainjepa ingest`` takes besides SOURCE and --out."""

    format: str = "auto"
    atlas: str | None = None
    labels: str | None = None
    tr: float | None = None
    phenotypes: str | None = None
    dataset: str | None = None
    orientation: str = "auto"
    min_frames: int = 20
    float16: bool = False
    clean: CleanConfig = field(default_factory=CleanConfig)
    shard_mb: float = 128.0
    scans_per_shard: int = 0
    stats_frames_per_scan: int = 64
    workers: int = 0
    write_attempts: int = 5
    retry_delay: float = 0.5


@dataclass
class IngestPlan:
    """What every worker needs: picklable, built once by the driver."""

    out_uri: str
    dataset: str
    atlas_name: str
    roi_labels: list[str]
    atlas_image: bytes | None
    labels_text: str | None
    chunks: list[list[ScanSpec]]
    names: list[str]
    phenotypes: dict[str, str]
    options: IngestOptions


@dataclass
class IngestResult:
    out: str
    manifest: dict[str, Any]
    quarantined: list[dict[str, Any]]
    chunks_run: int
    chunks_skipped: int
    seconds: float

    @property
    def exit_code(self) -> int:
        return EXIT_QUARANTINED if self.quarantined else 0


class ChunkIngestor:
    """Ray Data actor: turns one chunk of scans into a committed shard + receipt."""

    def __init__(self, plan: IngestPlan) -> None:
        self.plan = plan
        self.out = resolve(plan.out_uri)
        self.extractor = None
        if plan.atlas_image is not None:
            atlas = load_atlas(plan.atlas_image, plan.atlas_name, plan.labels_text)
            self.extractor = LabelExtractor(atlas)
        self.schema = dataset_schema(plan.phenotypes, plan.options.float16)
        self.pheno_names = phenotype_field_names(plan.phenotypes)

    def load_scan(self, spec: ScanSpec) -> ScanRow:
        """Read, parcellate/orient, clean and validate one scan (raises BadInput)."""
        opts, n_rois = self.plan.options, len(self.plan.roi_labels)
        raw = read_bytes(resolve(spec.path))
        if spec.kind == "nifti":
            if self.extractor is None:
                raise BadInput("NIfTI inputs need --atlas (an integer label image)")
            series, header_tr = self.extractor.extract(raw)
        else:
            series, _ = read_table(raw, spec.path, n_rois, opts.orientation)
            header_tr = None
        tr = spec.tr if spec.tr is not None else header_tr
        if tr is None or not np.isfinite(tr) or tr <= 0:
            raise BadInput("unknown TR: no RepetitionTime in a JSON sidecar and none in the image header; pass --tr")
        if opts.clean.active:
            confounds = read_confounds(resolve(spec.confounds) if spec.confounds else None)
            series = clean(series, tr, opts.clean, confounds)
        validate(series, n_rois, self.plan.roi_labels, opts.min_frames)
        return ScanRow(spec=spec, series=series, tr=float(tr))

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        index = int(item["chunk"])
        start = time.perf_counter()
        rows, quarantined = [], []
        for spec in self.plan.chunks[index]:
            try:
                rows.append(self.load_scan(spec))
            except BadInput as exc:
                quarantined.append({"scan_id": spec.scan_id, "path": spec.path, "reason": str(exc)})
            except Exception as exc:  # noqa: BLE001 - an unreadable file must not end the cohort run
                reason = f"{type(exc).__name__}: {exc}".strip()
                quarantined.append({"scan_id": spec.scan_id, "path": spec.path, "reason": reason,
                                    "traceback": traceback.format_exc(limit=3)})
        opts = self.plan.options
        table = rows_to_table(rows, self.plan.dataset, self.plan.atlas_name, self.schema, self.pheno_names) \
            if rows else None
        sample = stats_sample(rows, opts.stats_frames_per_scan) if rows else None
        scans = [{"scan_id": r.spec.scan_id, "subject": r.spec.subject, "n_frames": int(r.series.shape[1]),
                  "tr": r.tr} for r in rows]
        retry = {"attempts": opts.write_attempts, "base_delay": opts.retry_delay}
        receipt = commit_chunk(self.out, self.plan.names[index], index, table, sample, scans, quarantined,
                               time.perf_counter() - start, retry)
        return {"chunk": index, "rows": receipt.rows, "quarantined": len(quarantined), "bytes": receipt.bytes,
                "seconds": receipt.seconds}


def _first_table_labels(spec: ScanSpec, orientation: str) -> tuple[int, list[str] | None]:
    raw = read_bytes(resolve(spec.path))
    series, labels = read_table(raw, spec.path, None, orientation)
    return series.shape[0], labels


def _estimate_scan_bytes(spec: ScanSpec, n_rois: int, bytes_per_value: int) -> int:
    """Output bytes of one scan: R x T values, T from the first input (header only for NIfTI)."""
    if spec.kind == "nifti":
        import gzip

        import nibabel as nib

        raw = read_bytes(resolve(spec.path))
        stream = gzip.GzipFile(fileobj=io.BytesIO(raw)) if raw[:2] == b"\x1f\x8b" else io.BytesIO(raw)
        try:
            shape = nib.Nifti1Header.from_fileobj(stream, check=False).get_data_shape()
            frames = shape[3] if len(shape) == 4 else 500
        except Exception:  # noqa: BLE001 - a bad first file is quarantined later; assume a long scan
            frames = 500
    else:
        frames = 500
    return n_rois * frames * bytes_per_value


def plan_ingest(source: str, out: str, opts: IngestOptions) -> IngestPlan:
    """Discover inputs, fix the ROI set and schema, and cut the scan list into named chunks."""
    src = resolve(source)
    participants = resolve(opts.phenotypes) if opts.phenotypes else None
    specs = discover(src, opts.format, opts.tr, participants)
    atlas_image = labels_text = None
    atlas_name = "table"
    if opts.atlas:
        atlas_image = read_bytes(resolve(opts.atlas))
        labels_text = read_bytes(resolve(opts.labels)).decode() if opts.labels else None
        atlas_name = os.path.basename(opts.atlas).split(".nii")[0]
        atlas: Atlas = load_atlas(atlas_image, opts.atlas, labels_text)
        roi_labels = atlas.labels
    elif any(s.kind == "nifti" for s in specs):
        raise ValueError(f"{source}: NIfTI inputs need --atlas ATLAS_NIFTI (an integer label image in the BOLD space)")
    elif opts.labels:
        from brainjepa_platform.extract import read_labels

        _, roi_labels = read_labels(read_bytes(resolve(opts.labels)).decode(), np.array([]))
    else:
        n_rois, header = _first_table_labels(specs[0], opts.orientation)
        roi_labels = header or [f"roi-{i + 1}" for i in range(n_rois)]
    bytes_per_value = 2 if opts.float16 else 4
    per_shard = opts.scans_per_shard or max(
        1, int(opts.shard_mb * 2**20 // _estimate_scan_bytes(specs[0], len(roi_labels), bytes_per_value))
    )
    chunks = [specs[i : i + per_shard] for i in range(0, len(specs), per_shard)]
    params = {k: v for k, v in asdict(opts).items() if k not in ("workers", "write_attempts", "retry_delay")}
    params["roi_labels"] = roi_labels
    names = [chunk_name(i, c, params) for i, c in enumerate(chunks)]
    dataset = opts.dataset or os.path.basename(src.path.rstrip("/")) or "dataset"
    return IngestPlan(out_uri=out, dataset=dataset, atlas_name=atlas_name, roi_labels=roi_labels,
                      atlas_image=atlas_image, labels_text=labels_text, chunks=chunks, names=names,
                      phenotypes=phenotype_columns(specs), options=opts)


def run_chunks(plan: IngestPlan, pending: list[int], progress: bool) -> None:
    """Process ``pending`` chunks on a Ray Data actor pool, with a progress bar over scans."""
    import ray
    from ray.data import DataContext
    from tqdm import tqdm

    init_ray()
    DataContext.get_current().enable_progress_bars = False
    cpus = int(ray.cluster_resources().get("CPU", 1))
    concurrency = max(1, min(len(pending), plan.options.workers or cpus))
    ds = ray.data.from_items([{"chunk": i} for i in pending], override_num_blocks=len(pending))
    ds = ds.map(ChunkIngestor, fn_constructor_kwargs={"plan": plan},
                compute=ray.data.ActorPoolStrategy(size=concurrency), num_cpus=1)
    total = sum(len(plan.chunks[i]) for i in pending)
    with tqdm(total=total, unit="scan", desc="ingest", disable=not progress) as bar:
        for row in ds.iter_rows():
            bar.update(row["rows"] + row["quarantined"])
            if row["quarantined"]:
                bar.set_postfix(quarantined=row["quarantined"])


def ingest(source: str, out: str, opts: IngestOptions, progress: bool = True) -> IngestResult:
    """Ingest ``source`` into the dataset at ``out``; reruns resume where a previous run stopped."""
    start = time.perf_counter()
    plan = plan_ingest(source, out, opts)
    out_loc = resolve(out)
    ensure_bucket(out_loc)
    pending = [i for i, name in enumerate(plan.names) if not receipt_exists(out_loc, name)]
    if pending:
        run_chunks(plan, pending, progress)
    receipts: list[ChunkReceipt] = [load_receipt(out_loc, name) for name in plan.names]
    quarantined = [q for r in receipts for q in r.quarantined]
    params = {"format": opts.format, "min_frames": opts.min_frames, "orientation": opts.orientation,
              "clean": asdict(opts.clean), "source": source}
    columns = phenotype_field_names(plan.phenotypes)
    phenotypes = {columns[k]: kind for k, kind in plan.phenotypes.items()}
    manifest = build_manifest(out_loc, receipts, plan.dataset, plan.atlas_name, plan.roi_labels, phenotypes,
                              opts.float16, params)
    retry = {"attempts": opts.write_attempts, "base_delay": opts.retry_delay}
    write_json(out_loc.child("quarantine.json"), {"quarantined": quarantined}, **retry)
    write_json(out_loc.child("manifest.json"), manifest, **retry)
    return IngestResult(out=out_loc.uri, manifest=manifest, quarantined=quarantined,
                        chunks_run=len(pending), chunks_skipped=len(plan.names) - len(pending),
                        seconds=time.perf_counter() - start)


def read_manifest(uri: str) -> dict[str, Any]:
    """The manifest of an ingested dataset (a clear error when there is none)."""
    from brainjepa_platform.storage import read_json

    loc = resolve(uri).child("manifest.json")
    try:
        return read_json(loc)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{loc.uri} not found: {uri} is not an ingested dataset, or its ingest has not finished "
            "(rerun the same `brainjepa ingest` command to complete it)"
        ) from None


def shard_locations(uri: str) -> tuple[Location, list[str]]:
    """Filesystem location and the committed shard paths listed in the manifest."""
    loc = resolve(uri)
    manifest = read_manifest(uri)
    return loc, [loc.child(s["path"]).path for s in manifest["shards"]]
