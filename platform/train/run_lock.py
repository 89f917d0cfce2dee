"""One pretraining run at a time per run folder (``train.storage_path``/``train.name``).

Two runs writing into the same folder would share one MLflow run, interleave their checkpoints and
register two model versions. ``RunLock`` takes a lock file in the folder holding the holder's host,
pid, start time and a heartbeat that a background thread refreshes; a second run finds it and stops
with an error naming the holder. A lock left by a run that died is stale and taken over (with a
warning saying whose it was): its pid is no longer running on this host (or is this process, which
no longer holds it: an earlier run here could not delete it, e.g. the store was down), or its
heartbeat is older than ``stale_after`` seconds (a holder on another host). The lock is released
when the run ends, also on an exception.

Local folders: the lock file is created atomically and exclusively (``os.link`` of a complete
temporary file, which fails when the lock exists). ``s3://``: object stores have no exclusive create,
so the lock is best-effort there: written when absent, then read back to check it is ours.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from brainjepa_platform.storage import Location, read_bytes, write_bytes

_log = logging.getLogger(__name__)

LOCK_FILE = "brainjepa_run.lock"
HEARTBEAT_S = 30.0
"""Seconds between heartbeats of a held lock."""
STALE_AFTER_S = 300.0
"""A lock whose heartbeat is older than this is stale (its holder stopped without releasing it)."""
_HELD: set[str] = set()
"""Tokens of the locks this process holds now (a lock file naming this pid with another token is stale)."""


class RunLockedError(ValueError):
    """Another live run holds the run folder (a ValueError: the CLI prints it as one line, exit status 2)."""


@dataclass
class Holder:
    """What a lock file says about the run holding it."""

    host: str
    pid: int
    token: str
    started: float
    heartbeat: float

    def describe(self, now: float) -> str:
        started = datetime.fromtimestamp(self.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"host {self.host}, pid {self.pid}, started {started}, "
            f"last heartbeat {max(0.0, now - self.heartbeat):.0f}s ago"
        )


def pid_running(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:  # not a process id (os.kill would address a process group)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_reason(holder: Holder, now: float, stale_after: float) -> str | None:
    """Why ``holder`` no longer holds its lock, or None while it does."""
    if holder.host == socket.gethostname():
        if holder.pid == os.getpid() and holder.token not in _HELD:
            return "left by an earlier run in this process, which could not remove it"
        if not pid_running(holder.pid):
            return f"process {holder.pid} is no longer running on {holder.host}"
    if now - holder.heartbeat > stale_after:
        return f"no heartbeat for {now - holder.heartbeat:.0f}s (more than {stale_after:.0f}s)"
    return None


class RunLock:
    """Exclusive use of a run folder by this process; use as a context manager (``with RunLock(dir):``)."""

    def __init__(
        self,
        run_dir: Location,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after: float = STALE_AFTER_S,
        settle_s: float = 0.5,
    ) -> None:
        self.run_dir, self.loc = run_dir, run_dir.child(LOCK_FILE)
        self.heartbeat_s, self.stale_after, self.settle_s = heartbeat_s, stale_after, settle_s
        now = time.time()
        self.me = Holder(socket.gethostname(), os.getpid(), uuid.uuid4().hex, now, now)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the lock file ---------------------------------------------------------------------------
    def _payload(self) -> bytes:
        return json.dumps(asdict(self.me)).encode()

    def read(self) -> Holder | None:
        """The current holder (None: no lock file). An unreadable file counts as a holder last seen at
        its modification time, so it turns stale rather than blocking the folder for good."""
        try:
            raw = read_bytes(self.loc)
        except FileNotFoundError:
            return None
        try:
            return Holder(**{k: v for k, v in json.loads(raw).items() if k in Holder.__dataclass_fields__})
        except (ValueError, TypeError):
            mtime = self.loc.fs.get_file_info(self.loc.path).mtime
            seen = mtime.timestamp() if mtime is not None else 0.0
            return Holder("unknown", -1, "", seen, seen)

    def _create(self) -> bool:
        """Create the lock file if there is none; True when this call created it."""
        if not self.loc.is_local:  # an object store: write, then read back (best effort)
            if self.read() is not None:
                return False
            write_bytes(self.loc, self._payload())
            return self._confirmed()
        self.loc.fs.create_dir(self.run_dir.path, recursive=True)
        tmp = f"{self.loc.path}.{self.me.token}.tmp"
        with open(tmp, "wb") as f:
            f.write(self._payload())
        try:
            os.link(tmp, self.loc.path)  # atomic and exclusive: fails if the lock file exists
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def _confirmed(self) -> bool:
        """After writing over a lock: wait a moment, then check that no other run wrote after us."""
        time.sleep(self.settle_s)
        current = self.read()
        return current is not None and current.token == self.me.token

    # --- acquire, heartbeat, release ----------------------------------------------------------------
    def acquire(self) -> None:
        """Take the lock, taking over a stale one; RunLockedError when a live run holds it."""
        for _ in range(5):
            if self._create():
                self._start_heartbeat()
                return
            holder = self.read()
            if holder is None:  # released in between: try again
                continue
            now = time.time()
            reason = stale_reason(holder, now, self.stale_after)
            if reason is None:
                raise self._locked(holder, now)
            _log.warning("taking over the stale run lock %s (%s): %s", self.loc.uri, holder.describe(now), reason)
            self.me.heartbeat = time.time()
            write_bytes(self.loc, self._payload())
            if self._confirmed():
                self._start_heartbeat()
                return
        holder = self.read()
        if holder is None:
            raise RunLockedError(f"could not take the run lock {self.loc.uri}: other runs keep taking and releasing it")
        raise self._locked(holder, time.time())

    def _locked(self, holder: Holder, now: float) -> RunLockedError:
        return RunLockedError(
            f"{self.run_dir.uri} is in use by another pretraining run ({holder.describe(now)}; lock file "
            f"{self.loc.uri}): wait for it to finish or stop it, or choose another train.name. A lock left by a run "
            f"that died is taken over automatically (on another host after {self.stale_after:.0f}s without a "
            "heartbeat); delete the lock file only if you are sure no run uses the folder"
        )

    def _start_heartbeat(self) -> None:
        _HELD.add(self.me.token)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="brainjepa-run-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                current = self.read()
                if current is None or current.token != self.me.token:
                    _log.error(
                        "lost the run lock %s to %s",
                        self.loc.uri,
                        "nobody" if current is None else current.describe(time.time()),
                    )
                    return
                self.me.heartbeat = time.time()
                write_bytes(self.loc, self._payload())
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat is retried at the next one
                _log.warning("run lock heartbeat failed (%s); retrying in %.0fs", exc, self.heartbeat_s)

    def release(self) -> None:
        """Stop the heartbeat and delete the lock file if it is still ours."""
        _HELD.discard(self.me.token)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            current = self.read()
            if current is not None and current.token == self.me.token:
                self.loc.fs.delete_file(self.loc.path)
        except Exception as exc:  # noqa: BLE001 - never hide the run's own outcome behind a cleanup error
            _log.warning("could not remove the run lock %s: %s", self.loc.uri, exc)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
