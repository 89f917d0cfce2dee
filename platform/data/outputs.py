"""Output locations of ``brainjepa ingest`` and ``brainjepa synth``: what is there, refusing to replace it
without ``--overwrite``, and replacing it without leaving old files behind.

``--overwrite`` replaces an output of the same kind only (a dataset with a dataset, a synthetic BIDS
tree with a synthetic BIDS tree); a folder that brainjepa did not write is never replaced. An
unfinished ingest (``_ingest/`` without ``manifest.json``) is resumed, with or without the flag.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from typing import TypeVar

import pyarrow.fs as pafs

from brainjepa_platform.storage import Location, read_json, with_retries

T = TypeVar("T")

SYNTH_NAME = "brainjepa synthetic cohort"
"""``Name`` in the dataset_description.json of a ``brainjepa synth`` BIDS tree."""

KINDS = {
    "dataset": "an ingested dataset (manifest.json)",
    "partial": "an unfinished ingest (_ingest/ without manifest.json)",
    "synthetic": "a synthetic BIDS cohort written by `brainjepa synth`",
    "other": "files that brainjepa did not write",
}


class OutputExistsError(FileExistsError, ValueError):
    """The output location holds something this command will not replace; the message says what and why."""


def _names(loc: Location) -> list[str] | None:
    """Names directly under ``loc``; None when ``loc`` is a file."""
    info = with_retries(lambda: loc.fs.get_file_info(loc.path), f"checking {loc.uri}", 3, 0.2)
    if info.type == pafs.FileType.File:
        return None
    selector = pafs.FileSelector(loc.path, recursive=False, allow_not_found=True)
    infos = with_retries(lambda: loc.fs.get_file_info(selector), f"listing {loc.uri}", 3, 0.2)
    return [i.base_name for i in infos]


def output_kind(loc: Location) -> str:
    """``missing`` (nothing there, or an empty folder), ``file``, or one of :data:`KINDS`."""
    names = _names(loc)
    if names is None:
        return "file"
    if not names:
        return "missing"
    if "manifest.json" in names:
        return "dataset"
    if "_ingest" in names:
        return "partial"
    if "dataset_description.json" in names:
        try:
            if read_json(loc.child("dataset_description.json")).get("Name") == SYNTH_NAME:
                return "synthetic"
        except ValueError:  # not JSON: someone else's file
            pass
    return "other"


def check_output(loc: Location, overwrite: bool, replaces: str) -> str:
    """The kind of output at ``loc`` when this command may write there, else an OutputExistsError.

    ``replaces`` is the kind this command writes: ``dataset`` (ingest) or ``synthetic`` (synth's BIDS tree).
    """
    kind = output_kind(loc)
    if kind == "file":
        raise OutputExistsError(f"--out {loc.uri} is a file; the output must be a folder (or an s3:// prefix)")
    if kind == "missing" or (kind == "partial" and replaces == "dataset"):  # new, or an ingest to resume
        return kind
    if kind == replaces:
        if overwrite:
            return kind
        raise OutputExistsError(f"--out {loc.uri} already holds {KINDS[kind]}; pass --overwrite to replace it")
    raise OutputExistsError(
        f"--out {loc.uri} is not empty: it holds {KINDS[kind]}, not {KINDS[replaces]}; choose an empty or new "
        "--out (--overwrite replaces only an output of the same kind)"
    )


def delete_files(locs: list[Location]) -> None:
    """Delete every file in ``locs`` (retried like every other storage operation)."""
    for loc in locs:
        with_retries(lambda loc=loc: loc.fs.delete_file(loc.path), f"deleting {loc.uri}", 3, 0.2)


def replace_local_dir(out: Location, write: Callable[[Location], T]) -> T:
    """Write a new local folder next to ``out`` (a hidden sibling), then swap it in with two renames and
    delete the old one: readers see the old folder or the new one, never a mix."""
    parent, name = os.path.split(out.path.rstrip("/"))
    staging = Location(out.fs, os.path.join(parent, f".{name}.staging"), os.path.join(parent, f".{name}.staging"))
    shutil.rmtree(staging.path, ignore_errors=True)  # left by an interrupted replacement
    result = write(staging)
    old = os.path.join(parent, f".{name}.replaced-{uuid.uuid4().hex[:8]}")
    os.rename(out.path, old)
    os.rename(staging.path, out.path)
    shutil.rmtree(old)
    return result
