"""Object storage: local paths, file:// and s3:// URIs through pyarrow filesystems.

S3 credentials come from the standard AWS chain (:mod:`brainjepa_platform.credentials`:
environment, profiles, assumed roles, SSO, web identity, instance metadata), the region from
``AWS_REGION``/``AWS_DEFAULT_REGION``, and ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` name an
S3-compatible server. Credentials are never logged or written anywhere. Writes are atomic for
readers. Transient errors (network, throttling, 5xx) are retried with jittered backoff in one layer
(:func:`with_retries`); missing files, denied access and bad requests fail at once.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import urlparse

import pyarrow.fs as pafs

from brainjepa_platform.credentials import CredentialsError, current_credentials, profile_name

T = TypeVar("T")


class StorageError(RuntimeError):
    """An object-store operation failed for good (after retries); the message names the URI."""


@dataclass(frozen=True)
class Location:
    """A resolved URI: a pyarrow filesystem and the path inside it."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_s3(self) -> bool:
        return isinstance(self.fs, pafs.S3FileSystem)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def child(self, *parts: str) -> Location:
        path = "/".join([self.path.rstrip("/"), *parts])
        uri = "/".join([self.uri.rstrip("/"), *parts])
        return Location(self.fs, path, uri)


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def _s3_filesystem(retries: int) -> pafs.S3FileSystem:
    """pyarrow's S3 client with the credentials the standard AWS chain gives now (see aws_credentials)."""
    try:
        creds = current_credentials()
    except CredentialsError as exc:
        raise StorageError(str(exc)) from None
    return _cached_s3_filesystem(retries, creds.access_key, creds.secret_key, creds.token, region(), s3_endpoint())


@lru_cache(maxsize=16)
def _cached_s3_filesystem(
    retries: int, key: str, secret: str, token: str | None, region: str, endpoint: str | None
) -> pafs.S3FileSystem:
    """One filesystem per settings (kept in memory only; the key is never logged)."""
    kwargs: dict[str, Any] = {
        "access_key": key,
        "secret_key": secret,
        "session_token": token,
        "region": region,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=retries),
        "connect_timeout": 5,
        "request_timeout": 30,
        "allow_bucket_creation": True,
    }
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
        kwargs["force_virtual_addressing"] = False
    return pafs.S3FileSystem(**kwargs)


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def run_filesystem(loc: Location) -> pafs.FileSystem:
    """The filesystem to hand Ray Train / Tune for a whole run's checkpoints.

    With temporary credentials (assumed role, web identity, SSO, instance profile) this is s3fs behind
    pyarrow's ``FSSpecHandler``: pyarrow's own client keeps the credentials it was built with, which
    expire within hours, while s3fs renews them through botocore, and resolves them in each worker
    from its own environment (no secret travels with the pickled filesystem). Otherwise ``loc.fs``.
    """
    if not loc.is_s3 or not current_credentials().temporary:
        return loc.fs
    import s3fs

    fs = s3fs.S3FileSystem(
        endpoint_url=s3_endpoint(),
        profile=profile_name(),
        client_kwargs={"region_name": region()},
        config_kwargs={"connect_timeout": 5},
    )
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def resolve(uri: str | os.PathLike, retries: int = 3) -> Location:
    """Local path, ``file://`` or ``s3://bucket/key`` -> :class:`Location`."""
    text = os.fspath(uri)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"{text}: an s3 URI needs a bucket, e.g. s3://bucket/prefix")
        return Location(_s3_filesystem(retries), f"{parsed.netloc}{parsed.path}".rstrip("/"), text.rstrip("/"))
    if parsed.scheme in ("", "file"):
        path = os.path.abspath(parsed.path if parsed.scheme == "file" else text)
        return Location(pafs.LocalFileSystem(), path, path)
    if parsed.scheme in FSSPEC_SCHEMES:
        return Location(
            _fsspec_filesystem(parsed.scheme), f"{parsed.netloc}{parsed.path}".rstrip("/"), text.rstrip("/")
        )
    raise StorageError(
        f"{text}: unsupported URI scheme {parsed.scheme!r}; use a local path, file://, s3://, "
        f"or one of {sorted(s + '://' for s in FSSPEC_SCHEMES)}"
    )


FSSPEC_SCHEMES = {"gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure", "memory": ""}
"""Object stores reached through fsspec (gcsfs, adlfs: the project's optional extras ``gcs`` and ``azure``;
``memory`` is fsspec's own in-process store), wrapped for pyarrow. Their libraries resolve credentials
with their platforms' own chains (Google application default credentials, Azure's DefaultAzureCredential)."""


@lru_cache(maxsize=8)
def _fsspec_filesystem(scheme: str) -> pafs.FileSystem:
    import fsspec

    try:
        fs = fsspec.filesystem(scheme)
    except ImportError as exc:
        raise StorageError(
            f"{scheme}:// URIs need an optional dependency ({exc}): pip install 'brainjepa[{FSSPEC_SCHEMES[scheme]}]'"
        ) from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


TRANSIENT_ERRNOS = frozenset(
    {
        errno.EAGAIN,
        errno.EBUSY,
        errno.EINTR,
        errno.ETIMEDOUT,
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTUNREACH,
    }
)
"""Local/socket errno values worth a second try (a busy or briefly unreachable store)."""

TRANSIENT_S3 = re.compile(
    r"NETWORK_CONNECTION|SLOW_DOWN|SERVICE_UNAVAILABLE|INTERNAL_FAILURE|THROTTLING|REQUEST_TIMEOUT|"
    r"REQUEST_TIME_TOO_SKEWED|HTTP status (?:429|5\d\d)|curlCode"
)
"""pyarrow's S3 error text for the AWS SDK's retryable errors (network, throttling, 5xx); anything else
(ACCESS_DENIED, NoSuchBucket, HTTP 400/403, ...) fails the same way on every attempt."""


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` can help: network and throttling errors yes; missing files, denied
    access, bad requests no."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return True
    return isinstance(exc, OSError) and bool(TRANSIENT_S3.search(str(exc)))


def with_retries(action: Callable[[], T], what: str, attempts: int = 5, base_delay: float = 0.5) -> T:
    """Run ``action``; retry transient errors (:func:`is_transient`) with jittered exponential backoff,
    then raise a :class:`StorageError` naming ``what`` (a non-transient error at once, not retried).

    This is the only retry layer for the calls it wraps: they run on a filesystem without pyarrow's
    own S3 retries (:func:`single_attempt`), so ``attempts`` is the number of requests made.
    """
    delay, start = base_delay, time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except OSError as exc:  # pyarrow raises OSError subclasses for I/O and network failures
            transient = is_transient(exc)
            if not transient or attempt == attempts:
                elapsed = time.monotonic() - start
                tried = (
                    f"after {attempts} attempts over {elapsed:.0f}s"
                    if transient
                    else "(not retried: not a transient error)"
                )
                hint = (
                    "Check the credentials (AWS_ACCESS_KEY_ID) and their permissions on this bucket."
                    if "ACCESS_DENIED" in str(exc)
                    else "Check that the object store is reachable (AWS_ENDPOINT_URL) and the credentials are valid."
                    if transient
                    else ""
                )
                raise StorageError(f"{what} failed {tried}: {str(exc).rstrip('.')}. {hint}".rstrip()) from exc
            time.sleep(delay * (0.5 + 0.5 * _jitter.random()))  # "equal jitter": spreads synchronized retries
            delay *= 2
    raise AssertionError("unreachable")


_jitter = random.Random()


def single_attempt(loc: Location) -> Location:
    """``loc`` on a filesystem that makes each request once (for calls wrapped in :func:`with_retries`);
    the filesystem in ``loc`` itself keeps pyarrow's S3 retries for readers that have no other layer
    (Ray Data read tasks, Ray Train checkpoint uploads)."""
    if not loc.is_s3:
        return loc
    return Location(_s3_filesystem(1), loc.path, loc.uri)


def write_bytes(loc: Location, data: bytes, attempts: int = 5, base_delay: float = 0.5) -> None:
    """Write ``data`` so that readers see the whole object or nothing.

    Local: a temporary file renamed into place. Object stores (S3, GCS, Azure): a single upload, which
    only becomes visible once complete.
    """

    fs = single_attempt(loc).fs

    def put() -> None:
        if not loc.is_local:  # an object store: the object appears when its upload completes
            with fs.open_output_stream(loc.path, compression=None) as out:
                out.write(data)
            return
        parent = os.path.dirname(loc.path)
        fs.create_dir(parent, recursive=True)
        tmp = os.path.join(parent, f".{os.path.basename(loc.path)}.{uuid.uuid4().hex}.tmp")
        with fs.open_output_stream(tmp, compression=None) as out:
            out.write(data)
        os.replace(tmp, loc.path)

    with_retries(put, f"writing {loc.uri}", attempts, base_delay)


def read_bytes(loc: Location, attempts: int = 3) -> bytes:
    fs = single_attempt(loc).fs

    def get() -> bytes:
        with fs.open_input_stream(loc.path, compression=None) as stream:  # bytes as stored
            return stream.read()

    try:
        return with_retries(get, f"reading {loc.uri}", attempts, 0.2)
    except StorageError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            raise FileNotFoundError(f"{loc.uri} does not exist") from None
        raise


def exists(loc: Location) -> bool:
    info = with_retries(lambda: single_attempt(loc).fs.get_file_info(loc.path), f"checking {loc.uri}", 3, 0.2)
    return info.type != pafs.FileType.NotFound


def write_json(loc: Location, obj: Any, **retry: Any) -> None:
    write_bytes(loc, json.dumps(obj, indent=2, sort_keys=False).encode(), **retry)


def read_json(loc: Location) -> Any:
    return json.loads(read_bytes(loc))


def list_files(loc: Location, suffix: str = "") -> list[Location]:
    """Files under ``loc`` (recursively) whose names end with ``suffix``, sorted by path."""
    selector = pafs.FileSelector(loc.path, recursive=True, allow_not_found=True)
    infos = with_retries(lambda: single_attempt(loc).fs.get_file_info(selector), f"listing {loc.uri}", 3, 0.2)
    out = []
    for info in infos:
        if info.type == pafs.FileType.File and info.path.endswith(suffix):
            rel = info.path.lstrip("/")[len(loc.path.strip("/")) + 1 :]  # fsspec stores may add a leading "/"
            out.append(loc.child(rel))
    return sorted(out, key=lambda x: x.path)


def ensure_bucket(loc: Location) -> None:
    """Create the bucket of an s3 location if missing (for local stores: the directory)."""
    if loc.is_s3:
        bucket = loc.path.split("/", 1)[0]
        fs = single_attempt(loc).fs
        with_retries(lambda: fs.create_dir(bucket, recursive=False), f"creating bucket {bucket}", 3, 0.2)
    else:
        loc.fs.create_dir(loc.path, recursive=True)
