"""The dataset manifest (``OUT/manifest.json``): a typed, versioned view of what ``brainjepa ingest`` wrote.

Readers start from the manifest: the atlas and its ROI labels, counts, TR and length ranges, per-length
scan counts, phenotype columns, the committed shards and the cohort's robust-scaling statistics.
``Manifest.from_json`` checks ``schema_version`` and the required fields and names the file when either is
wrong; ``to_json`` writes the same JSON object the ingest writes. Fields added after the first version-1
manifests (``generation``, ``atlas.decided_by``, ``counts.ignored``, ``duration_seconds``, ``scan_lengths``)
have defaults, so those older manifests still read; ``scan_lengths`` None means "not recorded" and is left
out of ``to_json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any

from brainjepa.preprocess import RobustStats
from brainjepa_platform.storage import read_json, resolve

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"


class ManifestError(ValueError):
    """A manifest of another schema version, or one missing a required field."""


@dataclass(frozen=True, kw_only=True)
class AtlasInfo:
    """The ROI set of the dataset: atlas name, ROI count and labels, and how the ROI set was decided."""

    name: str
    n_rois: int
    roi_labels: tuple[str, ...]
    decided_by: str = ""


@dataclass(frozen=True, kw_only=True)
class SeriesLayout:
    """How the ``series`` column stores a scan."""

    column: str
    layout: str
    dtype: str


@dataclass(frozen=True, kw_only=True)
class Counts:
    scans: int
    subjects: int
    quarantined: int
    ignored: int = 0
    shards: int
    frames: int


@dataclass(frozen=True, kw_only=True)
class Range:
    """Smallest and largest value over the scans."""

    min: float
    max: float


@dataclass(frozen=True, kw_only=True)
class ScanLength:
    """How many scans have ``n_frames`` frames at this TR."""

    n_frames: int
    tr: float
    scans: int


@dataclass(frozen=True, kw_only=True)
class ShardInfo:
    """One committed Parquet shard (``path`` relative to the dataset)."""

    path: str
    rows: int
    bytes: int


@dataclass(frozen=True, kw_only=True)
class ManifestStats:
    """Per-ROI median and IQR of the cohort (robust scaling)."""

    median: tuple[float, ...]
    iqr: tuple[float, ...]
    method: str

    def robust(self) -> RobustStats:
        return RobustStats.from_dict({"median": list(self.median), "iqr": list(self.iqr)})


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """An ingested dataset's manifest (field order = key order of ``manifest.json``)."""

    schema_version: int
    dataset: str
    created: str
    generation: str = ""
    """The overwrite generation of the chunks ("" unless --overwrite replaced a dataset)."""
    atlas: AtlasInfo
    series: SeriesLayout
    counts: Counts
    tr_seconds: Range | None
    n_frames: Range | None
    duration_seconds: Range | None = None
    scan_lengths: tuple[ScanLength, ...] | None = None
    """None: not recorded (ingested before they were); left out of ``to_json``."""
    phenotypes: dict[str, str]
    shards: tuple[ShardInfo, ...]
    robust_stats: ManifestStats | None
    """None when the dataset has no scans."""
    parameters: dict[str, Any]
    command: str
    versions: dict[str, str]

    def stats(self) -> RobustStats:
        """The cohort's robust-scaling statistics (an error for a dataset without scans)."""
        if self.robust_stats is None:
            raise ValueError(f"dataset {self.dataset} has no scans, hence no robust statistics")
        return self.robust_stats.robust()

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``manifest.json`` (lists for tuples; no ``scan_lengths`` when not recorded)."""
        data = _plain(self)
        if self.scan_lengths is None:
            del data["scan_lengths"]
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> Manifest:
        """Check ``schema_version`` and the required fields (errors name ``where``, the file) and build."""
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: a manifest is a JSON object, found {type(data).__name__}")
        found = data.get("schema_version")
        if found is None:
            raise ManifestError(f"{where}: no schema_version (expected {SCHEMA_VERSION}); not a brainjepa manifest")
        if found != SCHEMA_VERSION:
            raise ManifestError(
                f"{where}: manifest schema_version {found!r}, this brainjepa reads version "
                f"{SCHEMA_VERSION}; re-ingest the dataset with this version"
            )
        return _build(
            cls,
            data,
            where,
            "",
            {
                "atlas": lambda v: _build(AtlasInfo, v, where, "atlas", {"roi_labels": tuple}),
                "series": lambda v: _build(SeriesLayout, v, where, "series"),
                "counts": lambda v: _build(Counts, v, where, "counts"),
                "tr_seconds": _optional(lambda v: _build(Range, v, where, "tr_seconds")),
                "n_frames": _optional(lambda v: _build(Range, v, where, "n_frames")),
                "duration_seconds": _optional(lambda v: _build(Range, v, where, "duration_seconds")),
                "scan_lengths": _optional(lambda v: tuple(_build(ScanLength, e, where, "scan_lengths[]") for e in v)),
                "phenotypes": dict,
                "shards": lambda v: tuple(_build(ShardInfo, e, where, "shards[]") for e in v),
                "robust_stats": _optional(
                    lambda v: _build(ManifestStats, v, where, "robust_stats", {"median": tuple, "iqr": tuple})
                ),
                "parameters": dict,
                "versions": dict,
            },
        )

    @classmethod
    def read(cls, uri: str) -> Manifest:
        """The manifest of the ingested dataset at ``uri`` (a clear error when there is none)."""
        loc = resolve(uri).child(MANIFEST_FILE)
        try:
            data = read_json(loc)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{loc.uri} not found: {uri} is not an ingested dataset, or its ingest has not finished "
                "(rerun the same `brainjepa ingest` command to complete it)"
            ) from None
        return cls.from_json(data, loc.uri)


def read_manifest(uri: str) -> Manifest:
    """The manifest of an ingested dataset (see ``Manifest.read``)."""
    return Manifest.read(uri)


def _build(
    cls: type, data: Any, where: str, section: str, convert: dict[str, Callable[[Any], Any]] | None = None
) -> Any:
    """``cls`` from a JSON object: every field without a default must be there; unknown keys are ignored."""
    name = section or "the manifest"
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: {name} is not a JSON object")
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        keys = ", ".join(f"{section}.{k}" if section else k for k in missing)
        raise ManifestError(f"{where}: manifest field(s) missing: {keys} (schema_version {SCHEMA_VERSION})")
    convert = convert or {}
    return cls(**{f.name: convert.get(f.name, _same)(data[f.name]) for f in fields(cls) if f.name in data})


def _optional(make: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``make`` for a value that may be null."""
    return lambda value: None if value is None else make(value)


def _same(value: Any) -> Any:
    return value


def _plain(value: Any) -> Any:
    """JSON value of a manifest part: dataclasses as objects (field order), tuples as lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
