"""The registered encoder served by ``mlflow models serve --env-manager local`` on 127.0.0.1 (a real sqlite
registry and a real server process), and the tags and description of its model version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

import brainjepa
from brainjepa.jepa import BrainJEPA
from brainjepa.model import ModelConfig
from brainjepa.preprocess import RobustStats
from brainjepa_platform.tracking.registry import load_encoder, log_encoder, training_tags
from brainjepa_platform.tracking.store import ensure_experiment
from tests.conftest import free_port
from tests.manifests import small_manifest

ATLAS, NAME, TR, STEPS = "toy12", "served-encoder", 2.0, 4
DATASET = "s3://reader:hunter2-pw@bucket/cohort"  # a password in the URI must not reach the registry
METRICS = {"step": STEPS, "loss": 0.4125, "val_loss": 0.5, "target_rank": 12.25, "context_reliance": float("nan")}
URI = f"models:/{NAME}@current"
START_TIMEOUT_S = 120.0

pytestmark = pytest.mark.timeout(240)


def tiny_cfg() -> ModelConfig:
    return ModelConfig(size="tiny", n_rois=12, frames=32, patch=8, n_gradients=3)


def raw_series(batch: int, rois: int = 12, frames: int = 32) -> np.ndarray:
    return np.random.default_rng(7).normal(5.0, 3.0, size=(batch, rois, frames)).astype(np.float32)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A sqlite registry holding one tiny encoder version (alias ``current``) with training tags."""
    root = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    rng = np.random.default_rng(0)
    gradients = torch.from_numpy(rng.standard_normal((12, 4))).float()
    stats = RobustStats(median=rng.normal(5.0, 1.0, 12), iqr=rng.uniform(1.0, 4.0, 12))
    torch.manual_seed(0)
    model = BrainJEPA(tiny_cfg(), gradients).eval()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        try:
            with mlflow.start_run(experiment_id=ensure_experiment("serving", uri)):
                version = log_encoder(
                    model,
                    tiny_cfg(),
                    gradients,
                    stats,
                    [f"roi_{i}" for i in range(12)],
                    ATLAS,
                    registered_name=NAME,
                    target_tr=TR,
                    version_tags=training_tags(STEPS, DATASET, METRICS),
                )
            yield {"uri": uri, "root": root, "version": version}
        finally:
            while mlflow.active_run() is not None:
                mlflow.end_run()
            mlflow.set_tracking_uri(None)


def _wait_for_ping(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    pytest.fail(f"mlflow models serve did not answer /ping within {START_TIMEOUT_S:g} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server's whole process group (the mlflow CLI and its uvicorn child)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def server(registry: dict[str, Any]) -> Iterator[str]:
    """``mlflow models serve -m models:/NAME@current --env-manager local`` on a free loopback port."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # the CLI runs `uvicorn` from PATH: this venv's
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry["uri"],
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        URI,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    log = registry["root"] / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=registry["root"], start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_ping(base, proc, log)
        yield base
    finally:
        _stop(proc)


def invoke(base: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST ``body`` as JSON to /invocations; (HTTP status, decoded JSON answer)."""
    request = urllib.request.Request(
        f"{base}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.integration
def test_served_embeddings_match_load_encoder(server: str, registry: dict[str, Any]) -> None:
    x = raw_series(3)
    bundle = load_encoder(URI)
    status, answer = invoke(server, {"inputs": x.tolist(), "params": {"pooling": "mean"}})
    assert status == 200, answer
    served = np.asarray(answer["predictions"], dtype=np.float32)
    assert served.shape == (3, 64)
    np.testing.assert_allclose(served, bundle.embed(x), rtol=1e-5, atol=1e-5)
    status, answer = invoke(server, {"inputs": x.tolist(), "params": {"pooling": "none", "batch_size": 2}})
    assert status == 200, answer
    np.testing.assert_allclose(np.asarray(answer["predictions"]), bundle.embed(x, pooling="none"), atol=1e-5)


@pytest.mark.integration
def test_served_model_refuses_wrong_input_naming_what_it_expects(server: str) -> None:
    status, answer = invoke(server, {"inputs": raw_series(2, rois=11).tolist()})
    assert status == 400
    assert "Shape of input (2, 11, 32) does not match expected shape (-1, 12, 32)" in answer["message"]
    status, answer = invoke(server, {"inputs": raw_series(1).tolist(), "params": {"pooling": "max"}})
    assert status == 400
    assert "pooling must be 'mean' or 'none', got 'max'" in answer["message"]


def test_version_tags_description_and_requirements(registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    mlflow.set_tracking_uri(registry["uri"])
    try:
        version = MlflowClient().get_model_version_by_alias(NAME, "current")
        assert str(version.version) == registry["version"]
        assert version.tags == {
            "atlas": ATLAS,
            "n_rois": "12",
            "frames": "32",
            "target_tr": "2",
            "patch": "8",
            "model_size": "tiny",
            "dim": "64",
            "positional": "gradient",
            "brainjepa_version": brainjepa.__version__,
            "steps": "4",
            "dataset": "s3://reader:***REDACTED***@bucket/cohort",
            "final.loss": "0.4125",
            "final.val_loss": "0.5",
            "final.target_rank": "12.25",  # context_reliance was NaN: not known, left out
        }
        text = version.description
        assert text.startswith(
            f"Brain-JEPA target encoder (tiny, dim 64, gradient positions), atlas {ATLAS}: "
            "raw ROI series, float32 (batch, 12 ROIs, 32 frames at TR 2 s) -> (batch, 64)"
        )
        assert "Pretrained 4 steps on s3://reader:***REDACTED***@bucket/cohort, final loss 0.4125." in text
        assert "hunter2" not in text
        requirements = Path(mlflow.pyfunc.get_model_dependencies(URI)).read_text().split()
        assert f"brainjepa=={brainjepa.__version__}" in requirements
        assert f"torch=={torch.__version__.split('+')[0]}" in requirements
    finally:
        mlflow.set_tracking_uri(None)


def test_pretraining_tags_its_version_with_steps_dataset_and_final_metrics(
    registry: dict[str, Any], tmp_path: Path
) -> None:
    """``register_encoder``, which ``brainjepa pretrain`` calls after training, from a real checkpoint directory
    (Ray Train's Checkpoint, no cluster) with the run's last report."""
    from ray.train import Checkpoint

    from brainjepa.jepa import PretrainEngine
    from brainjepa_platform.tracking.pretraining import register_encoder
    from brainjepa_platform.train.checkpoints import write_checkpoint_dir
    from brainjepa_platform.train.config import PretrainConfig

    cfg = PretrainConfig(model=ModelConfig(size="tiny", n_rois=12, frames=32, patch=8, positional="sincos"))
    cfg.data.dataset, cfg.data.target_tr, cfg.tracking.registered_model = "file:///data/cohort", 0.8, "pretrained"
    write_checkpoint_dir(tmp_path, PretrainEngine(BrainJEPA(cfg.model), cfg.optim, total_steps=4).state_dict(), {})
    stats = RobustStats(median=np.zeros(12), iqr=np.ones(12))
    manifest = small_manifest(12, atlas=ATLAS, stats=stats, roi_labels=[str(i) for i in range(12)])
    uri = registry["uri"]
    run_id = MlflowClient(uri).create_run(ensure_experiment("pretrain", uri)).info.run_id
    try:
        version = register_encoder(
            cfg,
            uri,
            run_id,
            Checkpoint.from_directory(tmp_path),
            manifest,
            None,
            {"step": 4, "loss": 0.25, "val_loss": float("nan"), "target_std": 0.125},
        )
        tags = MlflowClient(uri).get_model_version("pretrained", version).tags
    finally:
        mlflow.set_tracking_uri(None)
    assert {k: v for k, v in tags.items() if k in ("steps", "dataset", "target_tr", "positional") or "." in k} == {
        "steps": "4",
        "dataset": "file:///data/cohort",
        "target_tr": "0.8",
        "positional": "sincos",
        "final.loss": "0.25",
        "final.target_std": "0.125",
    }
