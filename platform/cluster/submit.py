"""Submitting platform jobs to a Ray cluster through its job API (``brainjepa submit``).

A job is ``python jobs/<kind>.py [--config FILE] ARGS...`` run by the cluster, with a working directory made
from this checkout: ``brainjepa/``, ``platform/`` (shipped as ``brainjepa_platform/``, its import name),
``jobs/`` and ``configs/``. Ray puts the working directory first on the job's and its workers' PYTHONPATH,
so the code that runs is the code submitted; the cluster's image provides the pinned dependencies.

Only non-secret settings travel with the job (MLflow URI, S3 endpoint and region, plus names given with
``--env``); names that look like credentials are refused: object-store and MLflow credentials come from the
cluster's own environment (a Kubernetes Secret, an IAM role). With Ray token authentication the token is
sent as a bearer header, read by Ray from RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token when
RAY_AUTH_MODE=token, or from ``--token-file``; it is never printed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

KINDS = ("pretrain", "sweep", "ingest", "evaluate")
FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
SECRET_MARKERS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL")
# What a job needs from the checkout; anything else (data, runs, .env files, virtualenvs) stays local.
SHIPPED = {"brainjepa": "brainjepa", "platform": "brainjepa_platform", "jobs": "jobs", "configs": "configs"}
EXCLUDES = [
    ".venv",
    ".git",
    "runs",
    "mlruns",
    "*.db",
    "demo-output",
    ".env",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    "*.egg-info",
]
MAX_STAGE_BYTES = 50 * 2**20
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass
class JobRequest:
    """One job: its kind, optional config file, arguments for the job script and extra variables to forward."""

    kind: str
    args: list[str] = field(default_factory=list)
    config: str | None = None
    env_names: list[str] = field(default_factory=list)
    root: Path = Path(".")


def is_secret_name(name: str) -> bool:
    """True for variable names that look like credentials (they must come from the cluster, not the client)."""
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


def _check_value(name: str, value: str) -> None:
    if "://" in value and urlsplit(value).password:
        raise ValueError(
            f"{name} embeds a password in its URL; give the cluster its credentials "
            "(e.g. MLFLOW_TRACKING_USERNAME/PASSWORD in a Secret) and use a URL without them"
        )


def job_env(env_names: list[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Non-secret variables to forward: the standard ones that are set locally, plus ``env_names``."""
    environ = os.environ if environ is None else environ
    for name in env_names:
        if is_secret_name(name):
            raise ValueError(
                f"--env {name}: refusing to forward a secret-looking variable (its name contains "
                f"one of {', '.join(SECRET_MARKERS)}); credentials must come from the cluster's "
                "environment (Kubernetes Secret, IAM role, instance profile)"
            )
        if name not in environ:
            raise ValueError(f"--env {name}: not set in this environment")
    out = {name: environ[name] for name in (*FORWARDED_ENV, *env_names) if environ.get(name)}
    for name, value in out.items():
        _check_value(name, value)
    return out


def entrypoint(request: JobRequest) -> str:
    """The shell command the cluster runs for ``request``."""
    if request.kind not in KINDS:
        raise ValueError(f"unknown job kind {request.kind!r}; one of {', '.join(KINDS)}")
    for arg in request.args:
        _check_value("a job argument", arg.split("=", 1)[-1])
    config = ["--config", request.config] if request.config else []
    return shlex.join(["python", f"jobs/{request.kind}.py", *config, *request.args])


def _ignore(_dir: str, names: list[str]) -> set[str]:
    return {n for n in names if n in ("__pycache__", ".DS_Store") or n.endswith((".pyc", ".db"))}


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def stage_code(request: JobRequest, dest: Path) -> Path:
    """Copy what the job needs from the checkout at ``request.root`` into ``dest`` (the working directory)."""
    root = request.root.resolve()
    script = root / "jobs" / f"{request.kind}.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found: run from a brainjepa checkout or pass --working-dir")
    for src, name in SHIPPED.items():
        if (root / src).is_dir():
            shutil.copytree(root / src, dest / name, ignore=_ignore)
    if request.config:
        config = Path(request.config)
        if config.is_absolute() or ".." in config.parts:
            raise ValueError(f"--config {request.config}: give a path relative to the checkout, e.g. configs/...")
        if not (root / config).is_file():
            raise FileNotFoundError(f"--config {request.config}: no such file under {root}")
        if not (dest / config).exists():
            (dest / config).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / config, dest / config)
    size = _tree_bytes(dest)
    if size > MAX_STAGE_BYTES:
        raise ValueError(
            f"the job's code is {size / 2**20:.0f} MiB (limit {MAX_STAGE_BYTES / 2**20:.0f} MiB): "
            "keep data and runs out of brainjepa/, platform/, jobs/ and configs/"
        )
    return dest


def runtime_env(working_dir: Path, env_vars: dict[str, str]) -> dict:
    """Ray runtime environment: the staged working directory and the forwarded (non-secret) variables."""
    return {"working_dir": str(working_dir), "excludes": list(EXCLUDES), "env_vars": dict(env_vars)}


def auth_headers(token: str | None) -> dict[str, str]:
    """An explicit bearer header for a token read from ``--token-file``; without one Ray adds its own."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def read_token(path: str | os.PathLike) -> str:
    """A Ray auth token from a file (whitespace stripped, as Ray does)."""
    token = Path(path).expanduser().read_text().strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


def submission_id(kind: str) -> str:
    return f"brainjepa-{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def exit_code(status: str, driver_exit_code: int | None) -> int:
    """0 when the job succeeded, else the driver's exit status when known (e.g. 3: ingest quarantined), else 1."""
    if status == "SUCCEEDED":
        return 0
    return driver_exit_code if driver_exit_code else 1


async def _tail(client: JobSubmissionClient, job_id: str, out: TextIO, written: list[int]) -> None:
    async for lines in client.tail_job_logs(job_id):
        out.write(lines)
        out.flush()
        written[0] += len(lines)


def follow(client: JobSubmissionClient, job_id: str, out: TextIO, poll_s: float = 2.0) -> str:
    """Stream the job's logs until it ends; if the stream drops, poll the status and print the rest of the
    logs at the end. Returns the job's final status."""
    written = [0]
    try:
        asyncio.run(_tail(client, job_id, out, written))
    except Exception as exc:  # noqa: BLE001 (a dropped log stream must not lose the job's outcome)
        print(f"(log stream interrupted: {exc}; waiting for the job to finish)", file=out, flush=True)
    while (status := str(client.get_job_status(job_id).value)) not in TERMINAL:
        time.sleep(poll_s)
    logs = client.get_job_logs(job_id)
    if len(logs) > written[0]:
        out.write(logs[written[0] :])
        out.flush()
    return status


def _submit_when_ready(client: JobSubmissionClient, wait_s: float = 90.0, **kwargs) -> str:
    """``client.submit_job``, retried while a freshly started head has no job agent yet."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(**kwargs)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def connect(address: str, token: str | None = None) -> JobSubmissionClient:
    """A JobSubmissionClient for the dashboard at ``address`` (http://HEAD:8265)."""
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address, headers=auth_headers(token))


def submit(
    request: JobRequest, address: str, *, token: str | None = None, wait: bool = True, out: TextIO | None = None
) -> int:
    """Submit ``request`` to the cluster at ``address``; with ``wait``, follow its logs and return its exit code."""
    out = out or sys.stdout
    env_vars = job_env(request.env_names)
    command = entrypoint(request)
    with tempfile.TemporaryDirectory(prefix="brainjepa-job-") as tmp:
        stage = stage_code(request, Path(tmp) / "job")  # local checks first, then the network
        client = connect(address, token)
        job_id = _submit_when_ready(
            client,
            entrypoint=command,
            runtime_env=runtime_env(stage, env_vars),
            submission_id=submission_id(request.kind),
            metadata={"brainjepa_kind": request.kind},
        )
    forwarded = ", ".join(sorted(env_vars)) or "none"
    print(f"Submitted {job_id} to {address}: {command}\n  forwarded variables: {forwarded}", file=out, flush=True)
    if not wait:
        print(
            f"  follow: ray job logs --follow {job_id} --address {address}\n"
            f"  stop:   ray job stop {job_id} --address {address}",
            file=out,
            flush=True,
        )
        return 0
    try:
        status = follow(client, job_id, out)
    except KeyboardInterrupt:
        print(
            f"\nStopped following; {job_id} goes on. Stop it with: ray job stop {job_id} --address {address}",
            file=out,
            flush=True,
        )
        return 130
    code = exit_code(status, client.get_job_info(job_id).driver_exit_code)
    print(f"Job {job_id} {status}" + (f" (exit status {code})" if code else ""), file=out, flush=True)
    return code
