"""Retries in one layer, transient errors only, with jitter: against real servers on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from brainjepa_platform import storage
from brainjepa_platform.storage import StorageError, is_transient, read_bytes, resolve, with_retries, write_bytes


class StatusHandler(BaseHTTPRequestHandler):
    """Answers every S3 request with one HTTP status and counts the requests."""

    status = 503
    requests: ClassVar[list[str]] = []

    def _answer(self) -> None:
        StatusHandler.requests.append(self.command)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(StatusHandler.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_PUT = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def s3_status_server(monkeypatch) -> Iterator[type[StatusHandler]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StatusHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    StatusHandler.requests = []
    yield StatusHandler
    server.shutdown()


@pytest.fixture
def resetting_server(monkeypatch) -> Iterator[list[int]]:
    """A TCP endpoint that accepts and drops every connection (a store falling over); counts them."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted = [0]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted[0] += 1
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    yield accepted
    listener.close()


def test_a_dropped_connection_is_retried_exactly_the_requested_times(resetting_server) -> None:
    """One retry layer: 3 attempts are 3 connections, not 3 x pyarrow's own retries."""
    with pytest.raises(StorageError, match=r"reading s3://b/k failed after 3 attempts.*NETWORK_CONNECTION"):
        read_bytes(resolve("s3://b/k"), attempts=3)
    assert resetting_server[0] == 3


@pytest.mark.parametrize(("status", "transient"), [(503, True), (500, True), (403, False), (400, False)])
def test_only_transient_http_errors_are_retried(s3_status_server, status, transient) -> None:
    s3_status_server.status = status
    with pytest.raises(StorageError) as info:
        write_bytes(resolve("s3://b/k"), b"x", attempts=3, base_delay=0.01)
    assert len(s3_status_server.requests) == (3 if transient else 1)  # one request per attempt
    assert ("not retried" in str(info.value)) is not transient


def test_missing_and_forbidden_local_files_fail_at_once(tmp_path) -> None:
    calls = []

    def missing() -> bytes:
        calls.append(1)
        return (tmp_path / "nope").read_bytes()

    with pytest.raises(StorageError, match="not retried"):
        with_retries(missing, "reading nope", attempts=5, base_delay=0.01)
    assert len(calls) == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):  # read_bytes keeps the familiar type
        read_bytes(resolve(tmp_path / "nope"))
    assert not is_transient(PermissionError(13, "denied"))
    assert is_transient(ConnectionResetError(104, "reset"))
    assert is_transient(OSError("AWS Error SLOW_DOWN during PutObject operation"))
    assert not is_transient(OSError("AWS Error ACCESS_DENIED during HeadObject operation"))


def test_backoff_is_jittered_and_grows(monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(storage.time, "sleep", slept.append)

    def flaky() -> None:
        raise ConnectionResetError(104, "reset")

    for _ in range(2):
        with pytest.raises(StorageError, match="after 4 attempts"):
            with_retries(flaky, "x", attempts=4, base_delay=1.0)
    first, second = slept[:3], slept[3:]
    for delays in (first, second):
        assert all(0.5 * 2**k <= d <= 2**k for k, d in enumerate(delays))  # exponential, within "equal jitter"
    assert first != second  # two clients failing together do not retry in lockstep


def test_fsspec_object_stores_by_scheme() -> None:
    """gs:// and az:// go through fsspec (gcsfs, adlfs: optional extras); fsspec's in-process memory://
    store exercises the same path: atomic write, read, exists, listing; a missing extra is named."""
    from brainjepa_platform.storage import exists, list_files, write_json

    root = resolve("memory://brainjepa-test/ds")
    write_bytes(root.child("data", "shard-0.parquet"), b"shard")
    write_json(root.child("manifest.json"), {"scans": 1})
    assert read_bytes(root.child("data", "shard-0.parquet")) == b"shard"
    assert exists(root.child("manifest.json")) and not exists(root.child("nope.json"))
    assert [f.uri for f in list_files(root, ".parquet")] == ["memory://brainjepa-test/ds/data/shard-0.parquet"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_bytes(root.child("nope.json"))
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(StorageError, match=r"brainjepa\[gcs\]"):
            resolve("gs://bucket/ds")
    with pytest.raises(StorageError, match="unsupported URI scheme 'ftp'"):
        resolve("ftp://host/ds")
