"""Checkpoint directories of a pretraining run: what is in one, how to verify one, and how to find the
newest intact one in the run's storage.

A checkpoint directory holds ``engine.pt`` (model, optimizer, schedule position) and ``meta.json``
(step, run id, resolved config and the SHA-256 of ``engine.pt``). Ray Train uploads the directory
when the worker reports it; the controller registers it a little later. When the object store fails
in between (or the process dies), Ray Train's own record may still name an older checkpoint, or none:
``latest_intact`` then finds the newest directory whose files are complete and whose hash matches, so
a restarted or rerun job never loses more than one checkpoint interval and never loads a torn file.
"""

from __future__ import annotations

import hashlib
import io
import json
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


def latest_intact(run_dir: Location) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(engine state, meta) of the newest intact checkpoint under ``run_dir``, or None."""
    candidates = []
    for meta_loc in list_files(run_dir, suffix="/" + META_FILE):
        try:
            meta = json.loads(read_bytes(meta_loc))
        except Exception:  # noqa: BLE001 - an unreadable meta file is not a checkpoint
            continue
        candidates.append((int(meta.get("step", -1)), meta_loc, meta))
    for _, meta_loc, meta in sorted(candidates, key=lambda c: c[0], reverse=True):
        engine_loc = Location(meta_loc.fs, meta_loc.path[: -len(META_FILE)] + ENGINE_FILE,
                              meta_loc.uri[: -len(META_FILE)] + ENGINE_FILE)
        try:
            return load_engine_state(read_bytes(engine_loc), meta, engine_loc.uri), meta
        except Exception:  # noqa: BLE001 - missing, unreadable or torn: try the one before
            continue
    return None
