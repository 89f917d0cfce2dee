"""Dataset layout in object storage, shard writing with receipts, and the manifest built from them
(its type: ``data.manifest.Manifest``).

    OUT/manifest.json                       written last: readers start here
    OUT/quarantine.json                     scans left out, with file and reason
    OUT/data/shard-00000-<digest>.parquet   one row per scan
    OUT/_ingest/receipts/<shard>.json       a chunk is done when its receipt exists
    OUT/_ingest/stats/<shard>.npy           per-chunk sample of frames for robust statistics
    OUT/_ingest/overwrite.json              while --overwrite replaces a dataset: the new chunks' generation

Chunks are fixed slices of the sorted scan list, named by a digest of their scans and the ingest
parameters (and, when replacing a dataset, a generation token), so a rerun of the same command skips
finished chunks and redoes unfinished ones under the same names (no duplicates, nothing lost). Every
object is written atomically; files of chunks that the manifest does not list are deleted after it.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform as std_platform
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

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
    ShardInfo,
)
from brainjepa_platform.data.sources import ScanSpec
from brainjepa_platform.storage import (
    Location,
    exists,
    list_files,
    read_bytes,
    read_json,
    write_bytes,
    write_json,
)

ID_COLUMNS = ("dataset", "scan_id", "subject", "session", "task", "run", "source", "atlas")


@dataclass
class ScanRow:
    """One ingested scan: ids, TR and its R x T series."""

    spec: ScanSpec
    series: np.ndarray
    tr: float


def dataset_schema(phenotypes: dict[str, str], float16: bool) -> pa.Schema:
    """Arrow schema shared by every shard: ids, tr, sizes, phenotypes, flattened row-major series."""
    fields = [pa.field(c, pa.string()) for c in ID_COLUMNS]
    fields += [pa.field("tr", pa.float64()), pa.field("n_frames", pa.int32()), pa.field("n_rois", pa.int32())]
    fields += [pa.field(k, pa.float64() if v == "float" else pa.string()) for k, v in phenotypes.items()]
    fields.append(pa.field("series", pa.list_(pa.float16() if float16 else pa.float32())))
    return pa.schema(fields)


def phenotype_field_names(phenotypes: dict[str, str]) -> dict[str, str]:
    """Phenotype column -> dataset column (prefixed when it would clash with a core column)."""
    core = set(ID_COLUMNS) | {"tr", "n_frames", "n_rois", "series"}
    return {k: (f"pheno_{k}" if k in core else k) for k in phenotypes}


def rows_to_table(
    rows: list[ScanRow], dataset: str, atlas: str, schema: pa.Schema, pheno_names: dict[str, str]
) -> pa.Table:
    value_type = schema.field("series").type.value_type
    np_type = np.float16 if value_type == pa.float16() else np.float32
    columns: dict[str, list[Any]] = {f.name: [] for f in schema}
    for row in rows:
        s = row.spec
        ids = {
            "dataset": dataset,
            "scan_id": s.scan_id,
            "subject": s.subject,
            "session": s.session,
            "task": s.task,
            "run": s.run,
            "source": s.path,
            "atlas": atlas,
        }
        for k, v in ids.items():
            columns[k].append(v)
        columns["tr"].append(row.tr)
        columns["n_rois"].append(row.series.shape[0])
        columns["n_frames"].append(row.series.shape[1])
        for src, dst in pheno_names.items():
            columns[dst].append(s.phenotypes.get(src))
    flat = [r.series.astype(np_type).ravel() for r in rows]
    offsets = np.concatenate([[0], np.cumsum([f.size for f in flat])]).astype(np.int32)
    values = np.concatenate(flat) if flat else np.zeros(0, np_type)
    arrays = [pa.array(columns[f.name], type=f.type) for f in schema if f.name != "series"]
    arrays.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=value_type)))
    return pa.Table.from_arrays(arrays, schema=schema)


def table_bytes(table: pa.Table, rows_per_group: int = 32) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=rows_per_group, compression="zstd")
    return sink.getvalue()


def chunk_name(index: int, specs: list[ScanSpec], params: dict[str, Any]) -> str:
    digest = hashlib.sha1(
        json.dumps([[s.scan_id, s.path] for s in specs] + [params], sort_keys=True, default=str).encode()
    ).hexdigest()[:10]
    return f"shard-{index:05d}-{digest}"


def stats_sample(rows: list[ScanRow], frames_per_scan: int, seed: int = 0) -> np.ndarray:
    """(R, k) frames drawn per scan (all frames of short scans) for the cohort's robust statistics."""
    parts = []
    for row in rows:
        t = row.series.shape[1]
        rng = np.random.default_rng([seed, int(hashlib.sha1(row.spec.scan_id.encode()).hexdigest()[:8], 16)])
        pick = np.arange(t) if t <= frames_per_scan else np.sort(rng.choice(t, frames_per_scan, replace=False))
        parts.append(row.series[:, pick].astype(np.float32))
    return np.concatenate(parts, axis=1)


@dataclass
class ChunkReceipt:
    """What one chunk produced: its shard (if any scan survived), scans and quarantined inputs."""

    chunk: int
    name: str
    shard: str | None
    rows: int
    bytes: int
    scans: list[dict[str, Any]] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    stats: str | None = None
    seconds: float = 0.0


def commit_chunk(
    out: Location,
    name: str,
    index: int,
    table: pa.Table | None,
    sample: np.ndarray | None,
    scans: list[dict[str, Any]],
    quarantined: list[dict[str, Any]],
    seconds: float,
    retry: dict[str, Any],
) -> ChunkReceipt:
    """Write shard, then statistics sample, then the receipt that marks the chunk done."""
    shard = stats = None
    size = 0
    if table is not None and table.num_rows:
        shard = f"data/{name}.parquet"
        payload = table_bytes(table)
        size = len(payload)
        write_bytes(out.child(shard), payload, **retry)
    if sample is not None and sample.size:
        stats = f"_ingest/stats/{name}.npy"
        buf = io.BytesIO()
        np.save(buf, sample, allow_pickle=False)
        write_bytes(out.child(stats), buf.getvalue(), **retry)
    receipt = ChunkReceipt(
        index, name, shard, 0 if table is None else table.num_rows, size, scans, quarantined, stats, seconds
    )
    write_json(out.child(f"_ingest/receipts/{name}.json"), asdict(receipt), **retry)
    return receipt


DATASET_FOLDERS = ("data", "_ingest/receipts", "_ingest/stats")
"""Where a dataset's chunks leave files, each named after its chunk."""


def stale_files(out: Location, names: list[str]) -> list[Location]:
    """Files under the dataset's chunk folders that belong to no chunk in ``names``: shards of a replaced
    dataset or of an abandoned ingest with other parameters, and temporary files of killed writers."""
    keep = set(names)
    return [
        f
        for folder in DATASET_FOLDERS
        for f in list_files(out.child(folder))
        if f.path.rsplit("/", 1)[-1].split(".", 1)[0] not in keep
    ]


def receipt_exists(out: Location, name: str) -> bool:
    return exists(out.child(f"_ingest/receipts/{name}.json"))


def load_receipt(out: Location, name: str) -> ChunkReceipt:
    return ChunkReceipt(**read_json(out.child(f"_ingest/receipts/{name}.json")))


def cohort_stats(out: Location, receipts: list[ChunkReceipt], max_frames: int = 50_000) -> RobustStats | None:
    """Median/IQR per ROI from the chunks' samples, subsampled in proportion to at most ``max_frames``."""
    with_stats = [r for r in receipts if r.stats]
    if not with_stats:
        return None
    samples = [np.load(io.BytesIO(read_bytes(out.child(r.stats))), allow_pickle=False) for r in with_stats]
    total = sum(s.shape[1] for s in samples)
    if total > max_frames:
        rng = np.random.default_rng(0)
        samples = [
            s[:, rng.choice(s.shape[1], max(1, round(max_frames * s.shape[1] / total)), replace=False)] for s in samples
        ]
    values = np.concatenate(samples, axis=1).astype(np.float64)
    q25, median, q75 = np.percentile(values, [25, 50, 75], axis=1)
    return RobustStats(median=median, iqr=np.maximum(q75 - q25, 1e-6))


def versions() -> dict[str, str]:
    import nibabel
    import nilearn
    import ray

    import brainjepa

    return {
        "brainjepa": brainjepa.__version__,
        "python": std_platform.python_version(),
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "nibabel": nibabel.__version__,
        "nilearn": nilearn.__version__,
        "ray": ray.__version__,
    }


def scan_lengths(scans: list[dict[str, Any]]) -> tuple[ScanLength, ...]:
    """How many scans have each (n_frames, tr): enough to count the scans long enough for any window."""
    counts = Counter((int(s["n_frames"]), float(s["tr"])) for s in scans)
    return tuple(ScanLength(n_frames=n, tr=tr, scans=k) for (n, tr), k in sorted(counts.items()))


def value_range(values: list[float]) -> Range | None:
    """Smallest and largest of ``values`` (None when there are none)."""
    return Range(min=min(values), max=max(values)) if values else None


@dataclass
class InputReport:
    """What the driver decided before any chunk ran: inputs quarantined or ignored at discovery, how the
    ROI set was chosen, and the overwrite generation (``""`` unless --overwrite replaced a dataset)."""

    quarantined: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[dict[str, Any]] = field(default_factory=list)
    roi_source: str = ""
    generation: str = ""


def build_manifest(
    out: Location,
    receipts: list[ChunkReceipt],
    dataset: str,
    atlas: str,
    roi_labels: list[str],
    phenotypes: dict[str, str],
    float16: bool,
    parameters: dict[str, Any],
    inputs: InputReport | None = None,
) -> Manifest:
    """Assemble the manifest from every chunk's receipt (after all chunks are done)."""
    inputs = inputs or InputReport()
    scans = [s for r in receipts for s in r.scans]
    quarantined = inputs.quarantined + [q for r in receipts for q in r.quarantined]
    stats = cohort_stats(out, receipts)
    trs = [s["tr"] for s in scans]
    frames = [s["n_frames"] for s in scans]
    durations = [s["n_frames"] * s["tr"] for s in scans]
    return Manifest(
        schema_version=SCHEMA_VERSION,
        dataset=dataset,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        generation=inputs.generation,
        atlas=AtlasInfo(name=atlas, n_rois=len(roi_labels), roi_labels=tuple(roi_labels), decided_by=inputs.roi_source),
        series=SeriesLayout(
            column="series", layout="row-major (n_rois, n_frames), flattened", dtype="float16" if float16 else "float32"
        ),
        counts=Counts(
            scans=len(scans),
            subjects=len({s["subject"] for s in scans}),
            quarantined=len(quarantined),
            ignored=len(inputs.ignored),
            shards=sum(1 for r in receipts if r.shard),
            frames=int(sum(frames)),
        ),
        tr_seconds=value_range(trs),
        n_frames=value_range(frames),
        duration_seconds=value_range(durations),
        scan_lengths=scan_lengths(scans),
        phenotypes=dict(phenotypes),
        shards=tuple(ShardInfo(path=r.shard, rows=r.rows, bytes=r.bytes) for r in receipts if r.shard),
        robust_stats=None
        if stats is None
        else ManifestStats(
            median=tuple(stats.median.tolist()), iqr=tuple(stats.iqr.tolist()), method="per-ROI median and IQR"
        ),
        parameters=parameters,
        command=" ".join(sys.argv),
        versions=versions(),
    )
