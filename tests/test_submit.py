"""Job submission to a real Ray head (``ray start --head``, token auth) over its HTTP job API.

The head runs in its own process group with its own ports and temp dir, so it never meets the session's
in-process cluster; this process only talks HTTP to the head's dashboard.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from ray.exceptions import AuthenticationError

from brainjepa_platform.cli import submit as cli_submit
from brainjepa_platform.cluster.connect import retry_raylet_timeout
from brainjepa_platform.cluster.submit import (
    JobRequest,
    connect,
    entrypoint,
    is_secret_name,
    job_env,
    runtime_env,
    stage_code,
    submit,
)
from brainjepa_platform.data.synth import SynthOptions, write_bids
from brainjepa_platform.storage import resolve

ROOT = Path(__file__).resolve().parents[1]
PORT_FLAGS = (
    "--port",
    "--dashboard-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
    "--ray-client-server-port",
)


@dataclass
class Head:
    address: str
    token: str
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))  # all interfaces: Ray's agents bind the node's address, not only loopback
        return s.getsockname()[1]


def _head_env(token: str) -> dict[str, str]:
    """This environment without Ray/AWS/MLflow settings (the session may hold them), plus token auth."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_", "MLFLOW_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        RAY_USAGE_STATS_ENABLED="0",
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
    )  # SIGTERM: stop at once, no 30 s drain
    return env


def _wait_for_head(head: Head, proc: subprocess.Popen, timeout_s: float = 180.0) -> None:
    """Until `ray start` says the node is up (it then blocks) and the job API answers with the token."""
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(f"{head.address}/api/version", headers={"Authorization": f"Bearer {head.token}"})
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{head.log.read_text()[-3000:]}")
        if "will now block" in head.log.read_text():
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
        time.sleep(1.0)
    raise TimeoutError(f"no Ray head at {head.address} after {timeout_s:.0f}s:\n{head.log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the `ray start --block` we started (it stops the node's processes: faster than signalling
    them all at once), then SIGKILL to whatever is left of its process group."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _start_head(token: str, log: Path) -> tuple[Head, subprocess.Popen, str]:
    """`ray start --head --block` on free loopback ports, its output in ``log``; returns once it is up."""
    ports = {flag: _free_port() for flag in PORT_FLAGS}
    temp_dir = tempfile.mkdtemp(prefix="bjr-", dir="/tmp")  # short: Ray's socket paths have a length limit
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        "--num-cpus=4",
        f"--temp-dir={temp_dir}",
        "--block",
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            env=_head_env(token),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=temp_dir,
        )
    head = Head(address=f"http://127.0.0.1:{ports['--dashboard-port']}", token=token, log=log)
    try:
        _wait_for_head(head, proc)
    except BaseException:
        _stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return head, proc, temp_dir


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory) -> Iterator[Head]:
    token = secrets.token_hex(16)
    log = tmp_path_factory.mktemp("head") / "ray-head.log"
    # _start_head cleans up after a failed start itself
    head, proc, temp_dir = retry_raylet_timeout(lambda: _start_head(token, log), lambda: None)
    try:
        yield head
    finally:
        _stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="brainjepa")
    cli_submit.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


# --- unit level: what leaves this machine ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SESSION_TOKEN",
        "MLFLOW_TRACKING_PASSWORD",
        "RAY_AUTH_TOKEN",
        "my_api_key",
        "DB_CREDENTIALS",
    ],
)
def test_secret_looking_names_are_refused(name: str, monkeypatch) -> None:
    monkeypatch.setenv(name, "xyz")
    assert is_secret_name(name)
    with pytest.raises(ValueError, match="secret-looking"):
        job_env([name])


def test_credentials_in_the_environment_never_reach_the_runtime_env(monkeypatch, tmp_path) -> None:
    secret = "xyz-very-secret-value"
    for name in (
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SESSION_TOKEN",
        "MLFLOW_TRACKING_PASSWORD",
        "RAY_AUTH_TOKEN",
    ):
        monkeypatch.setenv(name, secret)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.internal:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("BRAINJEPA_NOTE", "run-42")
    env = job_env(["BRAINJEPA_NOTE"])
    assert env == {
        "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000",
        "AWS_ENDPOINT_URL": "http://minio.internal:9000",
        "AWS_REGION": "eu-west-1",
        "BRAINJEPA_NOTE": "run-42",
    }
    request = JobRequest("pretrain", ["data.dataset=s3://b/c"], config="configs/pretrain/tiny.yaml", root=ROOT)
    renv = runtime_env(stage_code(request, tmp_path / "job"), env)
    assert secret not in repr(renv)
    staged = [p for p in (tmp_path / "job").rglob("*") if p.is_file()]
    assert not any(secret in p.read_text(errors="ignore") for p in staged)


def test_password_in_a_forwarded_url_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:hunter2@mlflow.example.org")
    with pytest.raises(ValueError, match="embeds a password"):
        job_env([])


def test_password_in_a_job_argument_is_refused() -> None:
    request = JobRequest("pretrain", ["tracking.tracking_uri=https://alice:hunter2@mlflow.example.org"])
    with pytest.raises(ValueError, match="embeds a password"):
        entrypoint(request)


def test_unset_env_name_is_an_error(monkeypatch) -> None:
    monkeypatch.delenv("BRAINJEPA_UNSET_VAR", raising=False)
    with pytest.raises(ValueError, match="not set"):
        job_env(["BRAINJEPA_UNSET_VAR"])


def test_staged_code_is_the_checkout_under_its_import_names(tmp_path) -> None:
    request = JobRequest("pretrain", ["train.steps=1"], config="configs/pretrain/tiny.yaml", root=ROOT)
    stage = stage_code(request, tmp_path / "job")
    assert sorted(p.name for p in stage.iterdir()) == ["brainjepa", "brainjepa_platform", "configs", "jobs"]
    shipped = stage / "brainjepa_platform" / "cluster" / "submit.py"
    assert shipped.read_text() == (ROOT / "platform" / "cluster" / "submit.py").read_text()
    assert not (stage / "brainjepa_platform" / "__init__.py").exists()  # never shadows the stdlib `platform`
    assert not list(stage.rglob("__pycache__"))
    assert entrypoint(request) == "python jobs/pretrain.py --config configs/pretrain/tiny.yaml train.steps=1"


def test_missing_job_script_and_outside_config_are_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown job kind"):
        entrypoint(JobRequest("train"))
    with pytest.raises(FileNotFoundError, match="jobs/pretrain.py"):
        stage_code(JobRequest("pretrain", root=tmp_path), tmp_path / "job")
    with pytest.raises(ValueError, match="relative to the checkout"):
        stage_code(JobRequest("pretrain", config="/etc/passwd", root=ROOT), tmp_path / "job2")


def test_cli_parses_job_arguments_after_its_own_options() -> None:
    parser = argparse.ArgumentParser(prog="brainjepa")
    cli_submit.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "submit",
            "ingest",
            "--address",
            "http://h:8265",
            "--env",
            "X",
            "s3://b/bids",
            "--out",
            "s3://b/ds",
            "--workers",
            "8",
        ]
    )
    assert (args.kind, args.address, args.env) == ("ingest", "http://h:8265", ["X"])
    assert args.args == ["s3://b/bids", "--out", "s3://b/ds", "--workers", "8"]
    args = parser.parse_args(
        ["submit", "pretrain", "--address", "http://h:8265", "--config", "c.yaml", "--no-wait", "a=1", "b=2"]
    )
    assert (args.config, args.no_wait, args.args) == ("c.yaml", True, ["a=1", "b=2"])


def test_cli_refuses_secret_env_before_contacting_anything() -> None:
    # nothing listens on port 9 (discard): the refusal must come first
    with pytest.raises(ValueError, match="secret-looking"):
        _cli(["submit", "pretrain", "--address", "http://127.0.0.1:9", "--env", "AWS_SECRET_ACCESS_KEY", "a=1"])


# --- end to end: a real head, token auth, ingest then pretrain as Ray jobs ----------------------------------


@pytest.mark.timeout(420)
@pytest.mark.integration
def test_ingest_and_pretrain_jobs_on_a_real_head(ray_head: Head, tmp_path, mlflow_db, monkeypatch, capsys) -> None:
    secret = "xyz-do-not-ship"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # a credential in the client's environment
    for name in ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BRAINJEPA_SUBMIT_TEST", "forwarded")
    token_file = tmp_path / "token"
    token_file.write_text(ray_head.token + "\n")

    # without the token the job API refuses us
    with pytest.raises(AuthenticationError):
        connect(ray_head.address)

    # ingestion as a job, through the CLI: a synthetic BIDS cohort -> Parquet dataset
    paths = write_bids(resolve(str(tmp_path / "bids")), SynthOptions(subjects=8, rois=24, frames=(120, 160)))
    dataset = tmp_path / "dataset"
    code = _cli(
        [
            "submit",
            "ingest",
            "--address",
            ray_head.address,
            "--token-file",
            str(token_file),
            "--working-dir",
            str(ROOT),
            paths["source"],
            "--atlas",
            paths["atlas"],
            "--labels",
            paths["labels"],
            "--out",
            str(dataset),
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "Ingested" in out and (dataset / "manifest.json").is_file()

    # pretraining as a job, through the Python API; the MLflow registry gets the encoder
    tracking = mlflow_db
    request = JobRequest(
        "pretrain",
        [
            f"data.dataset={dataset}",
            "train.steps=6",
            "train.checkpoint_every=6",
            "train.log_every=3",
            f"train.storage_path={tmp_path}/runs",
            f"tracking.tracking_uri={tracking}",
            "model.positional=sincos",
            "train.num_workers=1",
        ],
        config="configs/pretrain/tiny.yaml",
        env_names=["BRAINJEPA_SUBMIT_TEST"],
        root=ROOT,
    )
    log = io.StringIO()
    code = submit(request, ray_head.address, token=ray_head.token, out=log)
    assert code == 0, log.getvalue()[-3000:]
    assert "SUCCEEDED" in log.getvalue()
    version = MlflowClient(tracking).get_model_version_by_alias("brainjepa-encoder-atlas-24", "current")
    assert str(version.version) == "1"

    # what the cluster recorded for the jobs: forwarded variables, never the credential or the token
    client = connect(ray_head.address, ray_head.token)
    jobs = client.list_jobs()
    assert {j.metadata.get("brainjepa_kind") for j in jobs} == {"ingest", "pretrain"}
    assert all(j.status == "SUCCEEDED" for j in jobs)
    pretrain = next(j for j in jobs if j.metadata.get("brainjepa_kind") == "pretrain")
    assert pretrain.runtime_env["env_vars"] == {"BRAINJEPA_SUBMIT_TEST": "forwarded"}
    assert pretrain.runtime_env["working_dir"].startswith("gcs://_ray_pkg_")  # this checkout's code, uploaded
    for job in jobs:
        assert secret not in repr(job) and ray_head.token not in repr(job)
    assert ray_head.token not in out + log.getvalue()
