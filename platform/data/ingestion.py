"""Cohort ingestion: inputs -> Parquet shards + manifest in object storage, as a Ray Data pipeline.

Each chunk of scans (a fixed slice of the sorted scan list, ~128 MB of output) is one Ray Data row
handled by a pool of ``ChunkIngestor`` actors; a chunk writes its shard, a statistics sample and
then a receipt. The driver writes the quarantine report and, last, the manifest, then deletes the
files of chunks that are not in it (a replaced dataset's, an abandoned run's).

An existing dataset is replaced only with ``overwrite``: the new chunks get names of their own (a
generation token), so the old dataset stays whole and readable until the new manifest replaces
its manifest in one atomic write; an interrupted replacement resumes under the same token.
"""

from __future__ import annotations

import io
import os
import time
import traceback
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from brainjepa_platform.cluster.connect import init_ray, no_ray_data_progress_bars
from brainjepa_platform.data.extract import (
    Atlas,
    BadInput,
    CleanConfig,
    LabelExtractor,
    clean,
    load_atlas,
    read_confounds,
    read_table,
    table_shape,
    validate,
)
from brainjepa_platform.data.manifest import MANIFEST_FILE, Manifest, read_manifest
from brainjepa_platform.data.outputs import check_output, delete_files
from brainjepa_platform.data.shards import (
    ChunkReceipt,
    InputReport,
    ScanRow,
    build_manifest,
    chunk_name,
    commit_chunk,
    dataset_schema,
    load_receipt,
    phenotype_field_names,
    receipt_exists,
    rows_to_table,
    stale_files,
    stats_sample,
)
from brainjepa_platform.data.sources import ScanSpec, discover_inputs, phenotype_columns
from brainjepa_platform.storage import (
    Location,
    ensure_bucket,
    exists,
    read_bytes,
    read_json,
    resolve,
    with_retries,
    write_json,
)

EXIT_QUARANTINED = 3
PENDING_OVERWRITE = "_ingest/overwrite.json"
"""Written when --overwrite starts replacing a dataset: the generation token of the new chunks."""
NOT_IN_CHUNK_NAMES = ("workers", "write_attempts", "retry_delay", "overwrite")


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
    overwrite: bool = False
    """Replace a complete dataset at the output (without it an existing dataset is an error)."""


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
    inputs: InputReport = field(default_factory=InputReport)


@dataclass
class IngestResult:
    out: str
    manifest: Manifest
    quarantined: list[dict[str, Any]]
    chunks_run: int
    chunks_skipped: int
    seconds: float
    ignored: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_QUARANTINED if self.quarantined else 0

    @property
    def mostly_quarantined(self) -> bool:
        """More than half of the inputs were quarantined: the atlas or ROI set is likely the wrong one."""
        return 2 * len(self.quarantined) > len(self.quarantined) + self.manifest.counts.scans


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
                quarantined.append(
                    {
                        "scan_id": spec.scan_id,
                        "path": spec.path,
                        "reason": reason,
                        "traceback": traceback.format_exc(limit=3),
                    }
                )
        opts = self.plan.options
        table = (
            rows_to_table(rows, self.plan.dataset, self.plan.atlas_name, self.schema, self.pheno_names)
            if rows
            else None
        )
        sample = stats_sample(rows, opts.stats_frames_per_scan) if rows else None
        scans = [
            {"scan_id": r.spec.scan_id, "subject": r.spec.subject, "n_frames": int(r.series.shape[1]), "tr": r.tr}
            for r in rows
        ]
        retry = {"attempts": opts.write_attempts, "base_delay": opts.retry_delay}
        receipt = commit_chunk(
            self.out,
            self.plan.names[index],
            index,
            table,
            sample,
            scans,
            quarantined,
            time.perf_counter() - start,
            retry,
        )
        return {
            "chunk": index,
            "rows": receipt.rows,
            "quarantined": len(quarantined),
            "bytes": receipt.bytes,
            "seconds": receipt.seconds,
        }


HEAD_BYTES = 1 << 16


def _read_head(loc: Location, size: int = HEAD_BYTES) -> bytes:
    def get() -> bytes:
        with loc.fs.open_input_stream(loc.path, compression=None) as stream:
            return stream.read(size)

    return with_retries(get, f"reading {loc.uri}", 3, 0.2)


def _probe_table(spec: ScanSpec, orientation: str) -> Any:
    """The table's possible ROI counts and header, or the exception that reading it raised."""
    loc = resolve(spec.path)
    try:
        return table_shape(_read_head(loc), spec.path, orientation, lambda: read_bytes(loc))
    except Exception as exc:  # noqa: BLE001 - an unreadable table is quarantined by its chunk later
        return exc


def decide_table_rois(specs: list[ScanSpec], orientation: str, threads: int = 8) -> tuple[list[str], str]:
    """(ROI labels, how they were decided) for ROI tables ingested without --labels: the ROI count most
    tables have (not the first file's), and the most common header of labels among those tables."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        probes = list(pool.map(lambda s: _probe_table(s, orientation), specs))
    shapes = [p for p in probes if not isinstance(p, Exception)]
    if not shapes:
        raise ValueError(f"{specs[0].path}: {probes[0]} (no ROI table could be read)")
    votes = Counter(n for shape in shapes for n in shape.roi_counts).most_common()
    (rois, count), runner_up = votes[0], votes[1] if len(votes) > 1 else None
    if runner_up is not None and runner_up[1] == count:
        raise ValueError(
            f"cannot decide the ROI count of the tables: {count} of {len(specs)} fit {rois} ROIs and "
            f"{runner_up[1]} fit {runner_up[0]}; pass --labels (one name per ROI) or --orientation"
        )
    headers = Counter(tuple(s.labels) for s in shapes if s.labels and len(s.labels) == rois).most_common(1)
    labels = list(headers[0][0]) if headers else [f"roi-{i + 1}" for i in range(rois)]
    return labels, f"the majority of the ROI tables ({count} of {len(specs)} have {rois} ROIs)"


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


def plan_ingest(source: str, out: str, opts: IngestOptions, generation: str = "") -> IngestPlan:
    """Discover inputs, fix the ROI set and schema, and cut the scan list into named chunks."""
    src = resolve(source)
    participants = resolve(opts.phenotypes) if opts.phenotypes else None
    found = discover_inputs(src, opts.format, opts.tr, participants)
    specs = found.specs
    atlas_image = labels_text = None
    atlas_name = "table"
    roi_source = f"the atlas {opts.atlas}" + (f" and labels {opts.labels}" if opts.labels else "")
    if opts.atlas:
        atlas_image = read_bytes(resolve(opts.atlas))
        labels_text = read_bytes(resolve(opts.labels)).decode() if opts.labels else None
        atlas_name = os.path.basename(opts.atlas).split(".nii")[0]
        atlas: Atlas = load_atlas(atlas_image, opts.atlas, labels_text)
        roi_labels = atlas.labels
    elif any(s.kind == "nifti" for s in specs):
        raise ValueError(f"{source}: NIfTI inputs need --atlas ATLAS_NIFTI (an integer label image in the BOLD space)")
    elif opts.labels:
        from brainjepa_platform.data.extract import read_labels

        _, roi_labels = read_labels(read_bytes(resolve(opts.labels)).decode(), np.array([]))
        roi_source = f"the labels file {opts.labels}"
    else:
        roi_labels, roi_source = decide_table_rois(specs, opts.orientation)
    bytes_per_value = 2 if opts.float16 else 4
    per_shard = opts.scans_per_shard or max(
        1, int(opts.shard_mb * 2**20 // _estimate_scan_bytes(specs[0], len(roi_labels), bytes_per_value))
    )
    chunks = [specs[i : i + per_shard] for i in range(0, len(specs), per_shard)]
    params = {k: v for k, v in asdict(opts).items() if k not in NOT_IN_CHUNK_NAMES}
    params["roi_labels"] = roi_labels
    if generation:
        params["generation"] = generation
    names = [chunk_name(i, c, params) for i, c in enumerate(chunks)]
    dataset = opts.dataset or os.path.basename(src.path.rstrip("/")) or "dataset"
    return IngestPlan(
        out_uri=resolve(out).uri,
        dataset=dataset,
        atlas_name=atlas_name,
        roi_labels=roi_labels,
        atlas_image=atlas_image,
        labels_text=labels_text,
        chunks=chunks,
        names=names,
        phenotypes=phenotype_columns(specs),
        options=opts,
        inputs=InputReport(found.quarantined, found.ignored, roi_source, generation),
    )


def run_chunks(plan: IngestPlan, pending: list[int], progress: bool) -> None:
    """Process ``pending`` chunks on a Ray Data actor pool, with a progress bar over scans."""
    import ray
    from tqdm import tqdm

    init_ray()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    concurrency = max(1, min(len(pending), plan.options.workers or cpus))
    total = sum(len(plan.chunks[i]) for i in pending)
    # this bar over scans instead of Ray Data's own bars
    with no_ray_data_progress_bars(), tqdm(total=total, unit="scan", desc="ingest", disable=not progress) as bar:
        ds = ray.data.from_items([{"chunk": i} for i in pending], override_num_blocks=len(pending))
        ds = ds.map(
            ChunkIngestor,
            fn_constructor_kwargs={"plan": plan},
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=1,
        )
        for row in ds.iter_rows():
            bar.update(row["rows"] + row["quarantined"])
            if row["quarantined"]:
                bar.set_postfix(quarantined=row["quarantined"])


def output_generation(out: Location, overwrite: bool) -> str:
    """The generation token of the chunks to write at ``out`` (an error when ``out`` may not be written).

    ``""`` for a new dataset or an unfinished one (resumed); with ``overwrite`` over a complete dataset, the
    token of an interrupted replacement (resumed) or a new one, recorded before any chunk is written.
    """
    kind = check_output(out, overwrite, "dataset")
    pending = out.child(PENDING_OVERWRITE)
    started = read_json(pending)["generation"] if exists(pending) else ""
    if kind != "dataset":
        return started
    if started and started != read_json(out.child("manifest.json")).get("generation", ""):
        return started
    token = uuid.uuid4().hex[:12]
    write_json(pending, {"generation": token})
    return token


def ingest(source: str, out: str, opts: IngestOptions, progress: bool = True) -> IngestResult:
    """Ingest ``source`` into the dataset at ``out``; reruns resume where a previous run stopped.

    An existing complete dataset at ``out`` is an error unless ``opts.overwrite``; a folder that holds
    something else is always an error.
    """
    start = time.perf_counter()
    out_loc = resolve(out)
    generation = output_generation(out_loc, opts.overwrite)
    ensure_bucket(out_loc)
    plan = plan_ingest(source, out, opts, generation)
    pending = [i for i, name in enumerate(plan.names) if not receipt_exists(out_loc, name)]
    if pending:
        run_chunks(plan, pending, progress)
    receipts: list[ChunkReceipt] = [load_receipt(out_loc, name) for name in plan.names]
    quarantined = plan.inputs.quarantined + [q for r in receipts for q in r.quarantined]
    params = {
        "format": opts.format,
        "min_frames": opts.min_frames,
        "orientation": opts.orientation,
        "clean": asdict(opts.clean),
        "source": source,
    }
    columns = phenotype_field_names(plan.phenotypes)
    phenotypes = {columns[k]: kind for k, kind in plan.phenotypes.items()}
    manifest = build_manifest(
        out_loc, receipts, plan.dataset, plan.atlas_name, plan.roi_labels, phenotypes, opts.float16, params, plan.inputs
    )
    retry = {"attempts": opts.write_attempts, "base_delay": opts.retry_delay}
    write_json(out_loc.child("quarantine.json"), {"quarantined": quarantined, "ignored": plan.inputs.ignored}, **retry)
    write_json(out_loc.child(MANIFEST_FILE), manifest.to_json(), **retry)
    # the new manifest is in place: what no chunk of it owns (a replaced dataset's files) can go
    delete_files(stale_files(out_loc, plan.names))
    if exists(out_loc.child(PENDING_OVERWRITE)):
        delete_files([out_loc.child(PENDING_OVERWRITE)])
    return IngestResult(
        out=out_loc.uri,
        manifest=manifest,
        quarantined=quarantined,
        chunks_run=len(pending),
        chunks_skipped=len(plan.names) - len(pending),
        seconds=time.perf_counter() - start,
        ignored=plan.inputs.ignored,
    )


def shard_locations(uri: str) -> tuple[Location, list[str]]:
    """Filesystem location and the committed shard paths listed in the manifest."""
    loc = resolve(uri)
    return loc, [loc.child(s.path).path for s in read_manifest(uri).shards]
