"""Shared fixtures: seeded tiny model configs and synthetic cohorts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from brainjepa.model import ModelConfig

# The suite runs in `make test`'s pytest-xdist workers: one torch thread each on 2 cores (the tiny models
# here run as fast on one thread as on two, measured on the copy-task test), two in a single process.
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 2) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))))
# Ray Train's preemption watcher (an actor per run polling for cloud spot-node preemption notices) has nothing
# to watch on the suite's one-node loopback clusters; without it every Ray Train run starts one process fewer
# (~3 CPU-s each on 2 cores). Set before any cluster or `brainjepa` subprocess starts, so all of them inherit it.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return ModelConfig(size="tiny", n_rois=23, frames=48, patch=8, n_gradients=5)


@pytest.fixture
def tiny_gradients(tiny_cfg: ModelConfig) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.standard_normal((tiny_cfg.n_rois, 6))).float()


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty sqlite MLflow store with MLflow's schema migrations applied, made once per test process."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_db(tmp_path: Path, mlflow_template: Path) -> str:
    """URI of a new, empty sqlite MLflow store at ``tmp_path/mlflow.db``: a copy of the migrated template
    (MLflow takes ~1.5 CPU-s to create and migrate a store; tests of that creation use a path of their own)."""
    shutil.copyfile(mlflow_template, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


# --- real services: an S3 HTTP endpoint (moto server) on loopback and a local Ray cluster ----------
import os  # noqa: E402
import socket  # noqa: E402
from collections.abc import Iterator  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """A real S3 HTTP server (moto) on 127.0.0.1. Its credentials are only in a profile of a shared
    credentials file (no AWS_ACCESS_KEY_ID anywhere), as on a workstation: every S3 test, ingestion,
    pretraining and embedding on Ray included, goes through the standard credential chain. Set before
    Ray starts, so its workers inherit them."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = tmp_path_factory.mktemp("aws") / "credentials"
    credentials.write_text(
        "[brainjepa-tests]\naws_access_key_id = testing-key\naws_secret_access_key = testing-secret-do-not-log\n"
    )
    names = (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_EC2_METADATA_DISABLED",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
    )
    saved = {k: os.environ.get(k) for k in names}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        os.environ.pop(key, None)
    os.environ.update(
        {
            "AWS_PROFILE": "brainjepa-tests",
            "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": "us-east-1",
        }
    )
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test on the session's Ray cluster is an integration test, whatever its file marks."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint: str) -> Iterator[str]:
    """One local Ray cluster for the session (started by ray.init, stopped by ray.shutdown); its address, for
    `brainjepa` subprocesses to join it with RAY_ADDRESS instead of starting a cluster of their own."""
    import ray

    from brainjepa_platform.cluster.connect import start_local_ray

    context = start_local_ray(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield context.address_info["address"]
    ray.shutdown()


@pytest.fixture
def forbid_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any start of Ray fails the test: every module that binds ``init_ray`` at import is patched too (a
    module first imported under a patch of ``connect.init_ray`` alone would keep the fake for later tests)."""
    from brainjepa_platform.cluster import connect
    from brainjepa_platform.data import ingestion
    from brainjepa_platform.tracking import pretraining

    for module in (connect, ingestion, pretraining):
        monkeypatch.setattr(module, "init_ray", lambda *a, **k: pytest.fail("Ray started"))
