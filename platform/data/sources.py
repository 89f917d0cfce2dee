"""Input discovery: BIDS/fMRIPrep trees, folders of 4-D NIfTI files, folders of ROI tables.

Each scan becomes a :class:`ScanSpec` (ids, file URI, TR if known from a sidecar, confounds file,
phenotypes). Discovery only lists and reads small text files; images are read by the workers.
"""

from __future__ import annotations

import functools
import io
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from brainjepa_platform.storage import Location, exists, list_files, read_bytes

NIFTI_SUFFIXES = (".nii", ".nii.gz")
TABLE_SUFFIXES = (".tsv", ".csv", ".npy", ".txt")
ENTITY = re.compile(r"^([a-zA-Z]+)-([a-zA-Z0-9]+)$")
"""One ``key-value`` part of a BIDS file name (labels and indices are alphanumeric)."""


@dataclass
class ScanSpec:
    """One input scan. ``kind`` is ``nifti`` or ``table``; ``tr`` None means: read it from the image."""

    scan_id: str
    subject: str
    path: str
    kind: str
    session: str = ""
    task: str = ""
    run: str = ""
    tr: float | None = None
    confounds: str | None = None
    phenotypes: dict[str, Any] = field(default_factory=dict)


@functools.cache
def entity_order() -> tuple[str, ...]:
    """Every BIDS entity key (``sub``, ``ses``, ``task``, ``acq``, ..., ``echo``, ..., ``desc``) in the
    standard's file-name order, from the BIDS schema that bidsschematools ships."""
    from bidsschematools.schema import load_schema

    schema = load_schema()
    return tuple(schema.objects.entities[name]["name"] for name in schema.rules.entities)


def entities(name: str) -> dict[str, str]:
    """Every ``key-value`` entity of a file name, in BIDS order (keys the standard does not define follow,
    in file order): ``sub-01_ses-2_task-rest_echo-1_bold.nii.gz`` -> {sub: 01, ses: 2, task: rest, echo: 1}."""
    found: dict[str, str] = {}
    for part in _stem(name.rsplit("/", 1)[-1]).split("_"):
        match = ENTITY.match(part)
        if match:
            found.setdefault(match.group(1), match.group(2))
    rank = {key: i for i, key in enumerate(entity_order())}
    return dict(sorted(found.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def entity_id(ents: dict[str, str], skip: tuple[str, ...] = ()) -> str:
    """``sub-01_task-rest_acq-mb_echo-1``: the entities (BIDS order) as a scan id, without ``skip``."""
    return "_".join(f"{k}-{v}" for k, v in ents.items() if k not in skip)


def _stem(name: str) -> str:
    for suffix in (".nii.gz", *NIFTI_SUFFIXES, *TABLE_SUFFIXES):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def detect_format(source: Location) -> str:
    """``bids`` when the folder has dataset_description.json or sub-* folders, else by file types."""
    if exists(source.child("dataset_description.json")):
        return "bids"
    files = list_files(source)
    names = [f.path.rsplit("/", 1)[-1] for f in files]
    if any(f.path.split("/")[-2].startswith("func") and n.startswith("sub-") for f, n in zip(files, names)):
        return "bids"
    if any(n.endswith(NIFTI_SUFFIXES) for n in names):
        return "nifti"
    if any(n.endswith(TABLE_SUFFIXES) for n in names):
        return "roi-table"
    raise ValueError(f"{source.uri}: found no NIfTI files, ROI tables or BIDS layout to ingest")


def _sidecar_tr(json_loc: Location) -> float | None:
    if not exists(json_loc):
        return None
    try:
        meta = json.loads(read_bytes(json_loc))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_loc.uri}: not valid JSON ({exc})") from None
    tr = meta.get("RepetitionTime")
    return float(tr) if tr is not None else None


def _inherited_tr(source: Location, bold: Location, ents: dict[str, str]) -> float | None:
    """RepetitionTime from the scan's own sidecar, else a task-level sidecar at the dataset root."""
    tr = _sidecar_tr(Location(bold.fs, _stem(bold.path) + ".json", _stem(bold.uri) + ".json"))
    if tr is None and "task" in ents:
        tr = _sidecar_tr(source.child(f"task-{ents['task']}_bold.json"))
    return tr


def read_participants(loc: Location) -> dict[str, dict[str, Any]]:
    """participants.tsv -> {subject label without 'sub-': {column: value}} (numbers as floats)."""
    table = pd.read_csv(io.BytesIO(read_bytes(loc)), sep="\t", na_values=["n/a", "NA", ""], dtype=str)
    if "participant_id" not in table.columns:
        raise ValueError(f"{loc.uri}: expected a participant_id column, found {list(table.columns)}")
    out: dict[str, dict[str, Any]] = {}
    columns = [c for c in table.columns if c != "participant_id"]
    numeric = {c: pd.to_numeric(table[c], errors="coerce") for c in columns}
    # a column is numeric when every value present parses as a number
    is_number = {c: table[c].notna().sum() == numeric[c].notna().sum() for c in columns}
    for i, pid in enumerate(table["participant_id"]):
        row = {}
        for c in columns:
            raw = table[c].iloc[i]
            row[c] = float(numeric[c].iloc[i]) if is_number[c] else (None if pd.isna(raw) else str(raw))
        out[str(pid).removeprefix("sub-")] = row
    return out


@dataclass
class Discovery:
    """What discovery found: the scans to ingest, inputs quarantined before any is read (names that cannot
    be told apart) and inputs left out on purpose (a ``desc-preproc`` file supersedes its run's other descs)."""

    specs: list[ScanSpec]
    quarantined: list[dict[str, str]] = field(default_factory=list)
    ignored: list[dict[str, str]] = field(default_factory=list)


def _unique_ids(found: list[tuple[str, Location]]) -> tuple[list[tuple[str, Location]], list[dict[str, str]]]:
    """(scan id, file) pairs with an id of their own, and quarantine entries for files sharing an id (every
    one of them: none can be told apart from the others, so none is picked silently)."""
    by_id: dict[str, list[Location]] = defaultdict(list)
    for scan_id, loc in found:
        by_id[scan_id].append(loc)
    unique, quarantined = [], []
    for scan_id, locs in sorted(by_id.items()):
        if len(locs) == 1:
            unique.append((scan_id, locs[0]))
            continue
        for loc in locs:
            others = [o.uri for o in locs if o is not loc]
            quarantined.append(
                {
                    "scan_id": scan_id,
                    "path": loc.uri,
                    "reason": (
                        f"duplicate scan: {len(locs)} files have the scan id {scan_id} (also {', '.join(others[:3])}); "
                        "remove or rename all but one"
                    ),
                }
            )
    return unique, quarantined


def _bids_scan_ids(
    bolds: list[Location],
) -> tuple[list[tuple[str, Location]], list[dict[str, str]], list[dict[str, str]]]:
    """Scan ids from every BIDS entity of each BOLD file (``desc`` only where it tells files apart).

    Files of one run that differ only in ``desc``: ``desc-preproc`` is kept and the others are listed as
    ignored; without a ``desc-preproc`` each is a scan of its own.
    """
    groups: dict[str, list[tuple[Location, dict[str, str]]]] = defaultdict(list)
    quarantined, ignored = [], []
    for bold in bolds:
        ents = entities(bold.path)
        if "sub" not in ents:
            quarantined.append(
                {
                    "scan_id": _stem(bold.path.rsplit("/", 1)[-1]),
                    "path": bold.uri,
                    "reason": "BOLD file name without a sub-<label> entity",
                }
            )
            continue
        groups[entity_id(ents, ("desc",))].append((bold, ents))
    found = []
    for base, group in groups.items():
        preproc = [(loc, ents) for loc, ents in group if ents.get("desc") == "preproc"]
        if preproc and len(preproc) < len(group):
            ignored += [
                {
                    "scan_id": base,
                    "path": loc.uri,
                    "reason": f"superseded by {preproc[0][0].uri} (fMRIPrep desc-preproc preferred)",
                }
                for loc, ents in group
                if ents.get("desc") != "preproc"
            ]
            group = preproc
        for loc, ents in group:
            alone = len(group) == 1 or "desc" not in ents
            found.append((base if alone else f"{base}_desc-{ents['desc']}", loc))
    unique, duplicates = _unique_ids(found)
    return unique, quarantined + duplicates, ignored


CONFOUND_KEYS = (("desc", "space", "res", "den", "cohort"), ("desc", "space", "res", "den", "cohort", "echo", "part"))
"""Entities a BOLD file has and its run's fMRIPrep confounds file lacks (the second: multi-echo runs)."""


def _confounds_for(bold: Location, confounds: dict[tuple[str, str], Location]) -> Location | None:
    """The ``*_desc-confounds_timeseries.tsv`` next to a BOLD file with the same run entities, if any."""
    folder, ents = bold.path.rsplit("/", 1)[0], entities(bold.path)
    for skip in CONFOUND_KEYS:
        match = confounds.get((folder, entity_id(ents, skip)))
        if match is not None:
            return match
    return None


def discover_bids(source: Location, participants: Location | None = None) -> Discovery:
    """``sub-*/[ses-*/]func/*_bold.nii[.gz]``, one scan per file (fMRIPrep ``desc-preproc`` preferred)."""
    files = list_files(source)
    bolds = [f for f in files if f.path.endswith(("_bold.nii", "_bold.nii.gz")) and "/func/" in f.path]
    confounds = {
        (f.path.rsplit("/", 1)[0], entity_id(entities(f.path), ("desc",))): f
        for f in files
        if f.path.endswith("_desc-confounds_timeseries.tsv")
    }
    participants = participants or source.child("participants.tsv")
    phenos = read_participants(participants) if exists(participants) else {}
    unique, quarantined, ignored = _bids_scan_ids(bolds)
    specs = []
    for scan_id, bold in unique:
        ents = entities(bold.path)
        conf = _confounds_for(bold, confounds)
        specs.append(
            ScanSpec(
                scan_id=scan_id,
                subject=ents["sub"],
                session=ents.get("ses", ""),
                task=ents.get("task", ""),
                run=ents.get("run", ""),
                path=bold.uri,
                kind="nifti",
                tr=_inherited_tr(source, bold, ents),
                confounds=conf.uri if conf else None,
                phenotypes=phenos.get(ents["sub"], {}),
            )
        )
    return Discovery(sorted(specs, key=lambda s: s.scan_id), quarantined, ignored)


def discover_files(source: Location, kind: str, tr: float | None, participants: Location | None) -> Discovery:
    """A folder of NIfTI files or ROI tables; ids are file stems (files sharing a stem are quarantined)."""
    suffixes = NIFTI_SUFFIXES if kind == "nifti" else TABLE_SUFFIXES
    phenos = read_participants(participants) if participants is not None else {}
    found = [
        (_stem(f.path.rsplit("/", 1)[-1]), f)
        for f in list_files(source)
        if f.path.rsplit("/", 1)[-1].endswith(suffixes) and not f.path.rsplit("/", 1)[-1].startswith(".")
    ]
    unique, quarantined = _unique_ids(found)
    specs = []
    for stem, f in unique:
        ents = entities(f.path)
        subject = ents.get("sub", stem)
        file_tr = _sidecar_tr(Location(f.fs, _stem(f.path) + ".json", _stem(f.uri) + ".json"))
        specs.append(
            ScanSpec(
                scan_id=stem,
                subject=subject,
                session=ents.get("ses", ""),
                task=ents.get("task", ""),
                run=ents.get("run", ""),
                path=f.uri,
                kind="nifti" if kind == "nifti" else "table",
                tr=file_tr if file_tr is not None else tr,
                phenotypes=phenos.get(subject, {}),
            )
        )
    return Discovery(sorted(specs, key=lambda s: s.scan_id), quarantined)


def discover_inputs(
    source: Location, fmt: str, tr: float | None = None, participants: Location | None = None
) -> Discovery:
    """All inputs under ``source`` in format ``fmt`` (auto|bids|nifti|roi-table); ``tr`` overrides."""
    if not exists(source):
        raise FileNotFoundError(f"{source.uri} does not exist")
    fmt = detect_format(source) if fmt == "auto" else fmt
    if fmt == "bids":
        found = discover_bids(source, participants)
        if tr is not None:
            for s in found.specs:
                s.tr = tr
    elif fmt in ("nifti", "roi-table"):
        found = discover_files(source, fmt, tr, participants)
    else:
        raise ValueError(f"unknown --format {fmt!r}: expected auto, bids, nifti or roi-table")
    if not found.specs:
        why = (
            f" ({len(found.quarantined)} quarantined, e.g. {found.quarantined[0]['path']}: "
            f"{found.quarantined[0]['reason']})"
            if found.quarantined
            else ""
        )
        raise ValueError(f"{source.uri}: no {fmt} inputs found{why}")
    return found


def discover(
    source: Location, fmt: str, tr: float | None = None, participants: Location | None = None
) -> list[ScanSpec]:
    """The scans under ``source`` (see :func:`discover_inputs`)."""
    return discover_inputs(source, fmt, tr, participants).specs


def phenotype_columns(specs: list[ScanSpec]) -> dict[str, str]:
    """Column name -> 'float' or 'string', the same for every shard of the dataset."""
    kinds: dict[str, str] = {}
    for s in specs:
        for k, v in s.phenotypes.items():
            if v is None or (isinstance(v, float) and math.isnan(v)):
                kinds.setdefault(k, "float")
            elif isinstance(v, float):
                kinds.setdefault(k, "float")
            else:
                kinds[k] = "string"
    return kinds
