"""Checkpoint directories of a pretraining run: what is in one, how to verify one, and how to find the
newest intact one in the run's storage.

A checkpoint directory holds ``engine.pt`` (model, optimizer, schedule position) and ``meta.json`` (step,
run id, resolved config, the metrics reported with it and the SHA-256 of ``engine.pt``). Ray Train uploads
the directory when the worker reports it; the controller registers it a little later. When the object store
fails in between (or the process dies), Ray Train's own record may still name an older checkpoint, or none,
and the newest directory may hold a torn file. ``newest_intact`` lists the run's checkpoint
directories newest first and verifies each: a restarted or rerun job resumes from the newest intact
one (never losing more than one checkpoint interval per torn checkpoint, never loading a torn file),
and ``describe`` says which were skipped and why. ``finished_checkpoint`` tells the driver that a rerun has
nothing left to train (its newest intact checkpoint is at the run's last step).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from brainjepa_platform.storage import Location, list_files, read_bytes, resolve

ENGINE_FILE = "engine.pt"
META_FILE = "meta.json"


def run_location(storage_path: str, name: str) -> Location:
    """Where Ray Train keeps a run's checkpoints and state (``RunConfig(storage_path, name)``)."""
    return resolve(storage_path).child(name)


def write_checkpoint_dir(directory: Path, engine_state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write ``engine.pt`` and ``meta.json`` (with the engine file's hash) into a local directory."""
    torch.save(engine_state, directory / ENGINE_FILE)
    digest = hashlib.sha256((directory / ENGINE_FILE).read_bytes()).hexdigest()
    (directory / META_FILE).write_text(json.dumps({**meta, "step": engine_state["step"], "engine_sha256": digest}))


def load_engine_state(engine_bytes: bytes, meta: dict[str, Any], where: str) -> dict[str, Any]:
    """Engine state from checkpoint bytes, after checking them against the hash in ``meta``."""
    expected = meta.get("engine_sha256")
    if expected and hashlib.sha256(engine_bytes).hexdigest() != expected:
        raise ValueError(f"{where}: {ENGINE_FILE} does not match the hash in {META_FILE} (torn or altered file)")
    return torch.load(io.BytesIO(engine_bytes), map_location="cpu", weights_only=True)


def read_local_checkpoint(directory: Path) -> dict[str, Any]:
    """Verified engine state of a checkpoint directory on local disk."""
    meta = json.loads((directory / META_FILE).read_text())
    return load_engine_state((directory / ENGINE_FILE).read_bytes(), meta, str(directory))


@dataclass
class Skipped:
    """A checkpoint directory that could not be used, and why."""

    uri: str
    step: int | None
    reason: str


@dataclass
class Selection:
    """The newest intact checkpoint of a run (``state`` None when there is none) and the newer ones skipped."""

    state: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    uri: str = ""
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def step(self) -> int | None:
        return None if self.state is None else int(self.state["step"])


def _directory(meta_loc: Location) -> Location:
    cut = len(META_FILE) + 1
    return Location(meta_loc.fs, meta_loc.path[:-cut], meta_loc.uri[:-cut])


Candidate = tuple[int, str, Location, dict[str, Any]]  # step, directory URI, directory, meta


def _candidates(run_dir: Location) -> tuple[list[Candidate], list[Skipped]]:
    """The checkpoint directories under ``run_dir`` with a readable ``meta.json``, newest (by step) first, and
    those whose meta file is unreadable."""
    candidates: list[Candidate] = []
    unreadable = []
    for meta_loc in list_files(run_dir, suffix="/" + META_FILE):
        directory = _directory(meta_loc)
        try:
            meta = json.loads(read_bytes(meta_loc))
            candidates.append((int(meta["step"]), directory.uri, directory, meta))
        except Exception as exc:  # noqa: BLE001 - an unreadable meta file is not a checkpoint
            unreadable.append(Skipped(directory.uri, None, f"{META_FILE} unreadable: {exc}"))
    return sorted(candidates, key=lambda c: c[:2], reverse=True), unreadable


def newest_intact(run_dir: Location) -> Selection:
    """The newest checkpoint under ``run_dir`` (by step) whose ``engine.pt`` is complete, matches the hash
    in its ``meta.json`` and loads; the directories tried before it (or unreadable) go in ``skipped``."""
    return _first_intact(*_candidates(run_dir))


def _first_intact(candidates: list[Candidate], unreadable: list[Skipped]) -> Selection:
    """The first of ``candidates`` (newest first) whose engine file verifies and loads."""
    selection = Selection(skipped=list(unreadable))
    for step, _, directory, meta in candidates:
        engine = directory.child(ENGINE_FILE)
        try:
            selection.state = load_engine_state(read_bytes(engine), meta, engine.uri)
        except Exception as exc:  # noqa: BLE001 - missing, unreadable or torn: try the one before
            reason = str(exc).removeprefix(f"{engine.uri}: ").replace(engine.uri, ENGINE_FILE)
            selection.skipped.append(Skipped(directory.uri, step, reason))
            continue
        selection.meta, selection.uri = meta, directory.uri
        break
    return selection


def describe(selection: Selection, run_dir: Location) -> str | None:
    """One line: the checkpoint resumed from and any newer ones skipped, with why (None: no checkpoint at all)."""
    if selection.state is None and not selection.skipped:
        return None
    newest = "the newest intact one, " if selection.skipped else ""
    used = (
        f"resuming from {newest}step {selection.step} at {selection.uri}"
        if selection.state is not None
        else f"no intact checkpoint left in {run_dir.uri}: starting from step 0"
    )
    if not selection.skipped:
        return used
    skipped = "; ".join(
        f"step {s.step if s.step is not None else '?'} at {s.uri} ({s.reason})" for s in selection.skipped
    )
    return f"skipped unusable checkpoint(s): {skipped}; {used}"


def finished_checkpoint(run_dir: Location, steps: int) -> Selection | None:
    """The run's newest intact checkpoint when it is at ``steps`` or beyond (the run is finished), else None.

    Only the small meta files are read unless one of them says ``steps``: a rerun of an unfinished run costs
    a listing, the checkpoint itself is loaded (and verified) by the training workers as before."""
    candidates, unreadable = _candidates(run_dir)
    if not candidates or candidates[0][0] < steps:
        return None
    selection = _first_intact(candidates, unreadable)
    return selection if selection.step is not None and selection.step >= steps else None
