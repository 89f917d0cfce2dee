"""Input discovery: BIDS/fMRIPrep trees, folders of 4-D NIfTI files, folders of ROI tables.

Each scan becomes a :class:`ScanSpec` (ids, file URI, TR if known from a sidecar, confounds file,
phenotypes). Discovery only lists and reads small text files; images are read by the workers.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from brainjepa_platform.storage import Location, exists, list_files, read_bytes

NIFTI_SUFFIXES = (".nii", ".nii.gz")
TABLE_SUFFIXES = (".tsv", ".csv", ".npy", ".txt")
ENTITY = re.compile(r"(sub|ses|task|acq|run|space|desc)-([a-zA-Z0-9]+)")


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


def entities(name: str) -> dict[str, str]:
    """BIDS key-value entities of a file name: ``sub-01_ses-2_task-rest_bold`` -> {sub: 01, ...}."""
    return {k: v for k, v in ENTITY.findall(name)}


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


def discover_bids(source: Location, participants: Location | None = None) -> list[ScanSpec]:
    """``sub-*/[ses-*/]func/*_bold.nii[.gz]`` (fMRIPrep ``desc-preproc`` preferred when both exist)."""
    files = list_files(source)
    bolds = [f for f in files if f.path.endswith(("_bold.nii", "_bold.nii.gz")) and "/func/" in f.path]
    confounds = {f.path: f for f in files if f.path.endswith("_desc-confounds_timeseries.tsv")}
    participants = participants or source.child("participants.tsv")
    phenos = read_participants(participants) if exists(participants) else {}
    chosen: dict[tuple, ScanSpec] = {}
    for bold in bolds:
        name = bold.path.rsplit("/", 1)[-1]
        ents = entities(name)
        if "sub" not in ents:
            continue
        key = (ents["sub"], ents.get("ses", ""), ents.get("task", ""), ents.get("run", ""), ents.get("space", ""))
        if key in chosen and ents.get("desc") != "preproc":
            continue
        prefix = bold.path.rsplit("/", 1)[0] + "/" + name.split("_space-")[0].split("_desc-")[0].rsplit("_bold", 1)[0]
        conf = confounds.get(prefix + "_desc-confounds_timeseries.tsv")
        scan_id = "_".join(f"{k}-{ents[k]}" for k in ("sub", "ses", "task", "acq", "run", "space") if k in ents)
        chosen[key] = ScanSpec(
            scan_id=scan_id, subject=ents["sub"], session=ents.get("ses", ""), task=ents.get("task", ""),
            run=ents.get("run", ""), path=bold.uri, kind="nifti", tr=_inherited_tr(source, bold, ents),
            confounds=conf.uri if conf else None, phenotypes=phenos.get(ents["sub"], {}),
        )
    return sorted(chosen.values(), key=lambda s: s.scan_id)


def discover_files(source: Location, kind: str, tr: float | None, participants: Location | None) -> list[ScanSpec]:
    """A folder of NIfTI files or ROI tables; ids from BIDS entities in the name, else the file stem."""
    suffixes = NIFTI_SUFFIXES if kind == "nifti" else TABLE_SUFFIXES
    phenos = read_participants(participants) if participants is not None else {}
    specs = []
    for f in list_files(source):
        name = f.path.rsplit("/", 1)[-1]
        if not name.endswith(suffixes) or name.startswith("."):
            continue
        ents = entities(name)
        stem = _stem(name)
        subject = ents.get("sub", stem)
        file_tr = _sidecar_tr(Location(f.fs, _stem(f.path) + ".json", _stem(f.uri) + ".json"))
        specs.append(ScanSpec(
            scan_id=stem, subject=subject, session=ents.get("ses", ""), task=ents.get("task", ""),
            run=ents.get("run", ""), path=f.uri, kind="nifti" if kind == "nifti" else "table",
            tr=file_tr if file_tr is not None else tr, phenotypes=phenos.get(subject, {}),
        ))
    return sorted(specs, key=lambda s: s.scan_id)


def discover(
    source: Location, fmt: str, tr: float | None = None, participants: Location | None = None
) -> list[ScanSpec]:
    """All scans under ``source`` in format ``fmt`` (auto|bids|nifti|roi-table); ``tr`` overrides."""
    fmt = detect_format(source) if fmt == "auto" else fmt
    if fmt == "bids":
        specs = discover_bids(source, participants)
        if tr is not None:
            for s in specs:
                s.tr = tr
    elif fmt in ("nifti", "roi-table"):
        specs = discover_files(source, fmt, tr, participants)
    else:
        raise ValueError(f"unknown --format {fmt!r}: expected auto, bids, nifti or roi-table")
    if not specs:
        raise ValueError(f"{source.uri}: no {fmt} inputs found")
    ids = [s.scan_id for s in specs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"{source.uri}: scan ids are not unique (e.g. {dup}); rename the files")
    return specs


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
