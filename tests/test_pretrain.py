"""Distributed pretraining on real services: local Ray cluster, moto S3 on loopback, sqlite MLflow."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import psutil
import pytest
from mlflow.tracking import MlflowClient

from brainjepa.config import load_config
from brainjepa.preprocess import RobustStats
from brainjepa_platform.data.manifest import read_manifest
from brainjepa_platform.data.synth import SynthOptions, write_parquet
from brainjepa_platform.data.windows import StreamSpec, is_validation, sample_windows
from brainjepa_platform.evaluate.embed import embed_dataset, read_embeddings, write_embeddings
from brainjepa_platform.storage import exists, list_files, read_bytes, resolve, write_bytes
from brainjepa_platform.tracking.pretraining import run_pretraining
from brainjepa_platform.tracking.registry import load_encoder
from brainjepa_platform.tracking.uri import using_tracking_uri
from brainjepa_platform.train.config import PretrainConfig
from brainjepa_platform.train.run_lock import LOCK_FILE, RunLock, RunLockedError

ON_RAY = pytest.mark.usefixtures("ray_cluster")  # (conftest marks these integration)
SECRET = "testing-secret-do-not-log"
ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "brainjepa-encoder-atlas-24"  # the synthetic cohort's atlas ("atlas", 24 ROIs)


@pytest.fixture(scope="module")
def s3_dataset(s3_endpoint) -> str:
    """A seeded cohort on the process's S3 server, written once: pytest-xdist's worksteal may set this module
    fixture up again on the same worker when it interleaves modules, and finds the same cohort there."""
    uri = "s3://pretrain-data/cohort"
    if not exists(resolve(uri).child("manifest.json")):
        write_parquet(uri, SynthOptions(subjects=10, rois=24, frames=(100, 140), seed=3))
    return uri


def tiny_config(dataset: str, storage: str, tracking: str, name: str, *extra: str) -> PretrainConfig:
    overrides = [
        f"data.dataset={dataset}",
        f"train.storage_path={storage}",
        f"train.name={name}",
        f"tracking.tracking_uri={tracking}",
        "model.frames=32",
        "model.patch=8",
        "model.n_gradients=4",
        "train.steps=12",
        "train.checkpoint_every=4",
        "train.batch_size=4",
        "train.log_every=1",
        "data.windows_per_scan=16",
        "data.val_fraction=0.3",
        "data.shuffle_buffer=8",
        *extra,
    ]
    return load_config(PretrainConfig, ROOT / "configs" / "pretrain" / "tiny.yaml", overrides)


def metric_steps(tracking: str, run_id: str, key: str) -> list[int]:
    return [m.step for m in MlflowClient(tracking).get_metric_history(run_id, key)]


@ON_RAY
def test_two_workers_from_s3_checkpoint_register_and_resume(s3_dataset, mlflow_db, capsys) -> None:
    tracking = mlflow_db
    cfg = tiny_config(s3_dataset, "s3://pretrain-runs/runs", tracking, "s3run")
    process_uri = mlflow.get_tracking_uri()
    result = run_pretraining(cfg)
    assert result.steps == 12 and result.model_version == "1"
    assert mlflow.get_tracking_uri() == process_uri  # the run's store named in the config, not made the process's
    # checkpoints went to S3
    assert any(f.path.endswith("engine.pt") for f in list_files(resolve("s3://pretrain-runs/runs/s3run")))
    client = MlflowClient(tracking)
    run = client.get_run(result.run_id)
    assert run.data.params["model.size"] == "tiny" and run.data.params["train.num_workers"] == "2"
    assert not any(SECRET in v or "testing-key" in v for v in run.data.params.values())
    for key in (
        "loss",
        "lr",
        "wd",
        "ema_momentum",
        "target_std",
        "target_rank",
        "samples_per_s",
        "data_wait_fraction",
        "context_reliance",
        "context_rank",
        "context_std",
        "prediction_std",
    ):
        assert metric_steps(tracking, result.run_id, key) == list(range(1, 13)), key
    for key in ("floor", "loss_over_floor"):  # the position-only floor needs one step of targets first
        assert metric_steps(tracking, result.run_id, key) == list(range(2, 13)), key
    assert metric_steps(tracking, result.run_id, "val_loss") == [4, 8, 12]
    assert not exists(resolve("s3://pretrain-runs/runs/s3run").child(LOCK_FILE))  # released
    assert any("step 12/12 (100%)" in line for line in _worker_output())  # rank 0's progress lines
    # registered under a name saying what the model accepts; only that name's alias moved
    assert [m.name for m in client.search_registered_models()] == [MODEL_NAME]
    with using_tracking_uri(tracking):
        bundle = load_encoder(f"models:/{MODEL_NAME}@current")
    x = np.random.default_rng(0).normal(100, 5, (3, 24, 32)).astype(np.float32)
    assert bundle.embed(x).shape == (3, 64)
    with pytest.raises(ValueError, match="24 ROIs"):
        bundle.embed(x[:, :9])
    # ingest -> pretrain -> embed, all on S3 with the credentials only in a profile (conftest)
    emb = embed_dataset(bundle, s3_dataset)
    write_embeddings(emb, "s3://pretrain-runs/embeddings", {"model": MODEL_NAME})
    assert read_embeddings("s3://pretrain-runs/embeddings")["embedding"].map(len).eq(64).all()
    assert len(emb.scan_ids) == read_manifest(s3_dataset).counts.scans - len(emb.skipped)
    # the same command again resumes the finished run instead of starting over: no training workers, the final
    # checkpoint and its report registered again
    capsys.readouterr()
    again = run_pretraining(tiny_config(s3_dataset, "s3://pretrain-runs/runs", tracking, "s3run"))
    assert again.run_id == result.run_id and again.steps == 12 and again.metrics == result.metrics
    assert "s3run finished at step 12" in capsys.readouterr().out
    assert str(client.get_model_version_by_alias(MODEL_NAME, "current").version) == again.model_version == "2"
    assert metric_steps(tracking, result.run_id, "resumed_from_step") == [12]
    assert metric_steps(tracking, result.run_id, "loss") == list(range(1, 13))  # nothing retrained
    # a torn newest checkpoint (step 12) does not block resuming: the rerun falls back to step 8
    newest = max(
        (f for f in list_files(resolve("s3://pretrain-runs/runs/s3run")) if f.path.endswith("meta.json")),
        key=lambda f: json.loads(read_bytes(f))["step"],
    )
    engine = resolve(newest.uri.replace("meta.json", "engine.pt"))
    write_bytes(engine, read_bytes(engine)[:1000])
    torn = run_pretraining(tiny_config(s3_dataset, "s3://pretrain-runs/runs", tracking, "s3run"))
    assert torn.steps == 12 and sorted(metric_steps(tracking, result.run_id, "resumed_from_step")) == [8, 12]
    assert str(client.get_model_version_by_alias(MODEL_NAME, "current").version) == torn.model_version
    # other settings under the same run name are refused
    with pytest.raises(ValueError, match="optim.lr"):
        run_pretraining(tiny_config(s3_dataset, "s3://pretrain-runs/runs", tracking, "s3run", "optim.lr=0.1"))


def _worker_output() -> list[str]:
    """Lines the local cluster's workers printed (Ray keeps them in its session's log files)."""
    from ray._private.worker import global_worker  # the session's log folder (no public accessor)

    logs = Path(global_worker.node.get_logs_dir_path())
    return [line for f in logs.glob("worker-*.out") for line in f.read_text(errors="replace").splitlines()]


@ON_RAY
def test_second_run_on_a_run_folder_is_refused(s3_dataset, tmp_path) -> None:
    """While a run holds storage_path/name, another is refused before it creates anything."""
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = tiny_config(s3_dataset, str(tmp_path / "runs"), tracking, "busy")
    with RunLock(resolve(str(tmp_path / "runs" / "busy"))), pytest.raises(RunLockedError, match="in use by another"):
        run_pretraining(cfg)
    assert [p.name for p in (tmp_path / "runs" / "busy").iterdir()] == []  # no run state, no gradients
    assert not (tmp_path / "mlflow.db").exists()


def _latest_logged_step(client: MlflowClient) -> int:
    try:  # the database and run are created by the run itself, a moment after the test starts
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    except Exception:  # noqa: BLE001
        return 0
    return max((m.step for r in runs for m in client.get_metric_history(r.info.run_id, "loss")), default=0)


def _train_workers_of_this_job() -> list[int]:
    """Process ids of this test's Ray Train workers: live RayTrainWorker actors of this driver's job in the test
    cluster's actor table (never another process of the machine). The table is read from the GCS: the session's
    cluster runs without the dashboard that ray.util.state would ask."""
    import ray
    from ray._private import state

    job_id = ray.get_runtime_context().get_job_id()
    return sorted(
        a["Pid"]
        for a in state.actors().values()
        if a["ActorClassName"] == "RayTrainWorker" and a["State"] == "ALIVE" and a["JobID"] == job_id and a["Pid"]
    )


def _kill_a_train_worker_after_first_checkpoint(tracking: str, stop: threading.Event, killed: list) -> None:
    """Kill one train worker a while after step 6: by then Ray Train's controller has registered the
    step-4 checkpoint (a checkpoint reported moments before a failure may not be registered yet)."""
    client = MlflowClient(tracking)
    while not stop.is_set():
        if _latest_logged_step(client) >= 6:
            time.sleep(2.5)
            workers = _train_workers_of_this_job()
            if workers:
                psutil.Process(workers[0]).kill()
                killed.append(workers[0])
                return
        time.sleep(0.2)


@ON_RAY
def test_killed_worker_resumes_from_last_checkpoint(s3_dataset, tmp_path, mlflow_db) -> None:
    tracking = mlflow_db
    cfg = tiny_config(
        s3_dataset, str(tmp_path / "runs"), tracking, "killed", "train.steps=32", "tracking.register=false"
    )
    stop, killed = threading.Event(), []
    killer = threading.Thread(
        target=_kill_a_train_worker_after_first_checkpoint, args=(tracking, stop, killed), daemon=True
    )
    killer.start()
    try:
        result = run_pretraining(cfg)
    finally:
        stop.set()
    assert killed, "no train worker was killed"
    assert result.steps == 32
    resumed = MlflowClient(tracking).get_metric_history(result.run_id, "resumed_from_step")
    steps = metric_steps(tracking, result.run_id, "loss")
    assert resumed and resumed[0].value >= 4, f"no resume recorded; loss logged at steps {steps}"
    repeated = len(steps) - len(set(steps))
    assert set(steps) == set(range(1, 33)) and repeated <= 4, f"steps redone beyond one checkpoint interval: {steps}"


def test_subject_split_has_no_leak() -> None:
    subjects = [f"{i:03d}" for i in range(200)]
    val = {s for s in subjects if is_validation(s, 0.2, 0)}
    assert 20 < len(val) < 60
    assert val == {s for s in subjects if is_validation(s, 0.2, 0)}  # deterministic
    # scan i is the constant i, so every window says which subject it came from
    batch = {
        "subject": np.array(subjects[:20]),
        "tr": np.full(20, 1.0),
        "n_rois": np.full(20, 3),
        "n_frames": np.full(20, 50),
        "series": np.array([np.full(150, float(i)) for i in range(20)], dtype=object),
    }
    stats = RobustStats(np.zeros(3), np.ones(3))
    drawn = {}
    for validation in (False, True):
        spec = StreamSpec(3, 16, 1.0, stats, validation, 0.2, 0, windows_per_scan=3)
        out = sample_windows(batch, spec)["series"]
        members = [i for i, s in enumerate(subjects[:20]) if is_validation(s, 0.2, 0) == validation]
        assert members and out.shape == (len(members) * 3, 3, 16)
        drawn[validation] = sorted(np.round(out[:, 0, 0]).astype(int).tolist())
        assert drawn[validation] == sorted(members * 3)  # windows_per_scan windows of each scan of the split only
    assert not set(drawn[False]) & set(drawn[True])


def test_windows_leave_a_block_shuffled() -> None:
    """Every kept scan gives its windows, but not grouped by scan in shard order (the local shuffle)."""
    n = 20
    batch = {
        "subject": np.array([f"{i:03d}" for i in range(n)]),
        "tr": np.full(n, 1.0),
        "n_rois": np.full(n, 2),
        "n_frames": np.full(n, 40),
        "series": np.array([np.full(80, float(i)) for i in range(n)], dtype=object),
    }
    spec = StreamSpec(2, 8, 1.0, RobustStats(np.zeros(2), np.ones(2)), False, 0.0, 0, windows_per_scan=3)
    order = np.round(sample_windows(batch, spec)["series"][:, 0, 0])  # float32 scaling: 8.999999 -> 9
    assert sorted(order.tolist()) == [float(i) for i in range(n) for _ in range(3)]
    assert order.tolist() != sorted(order.tolist())


def _second_checkpoint_upload(seen: list[bytes]):
    def trigger(chunk: bytes) -> bool:
        request_line = chunk.split(b"\r\n", 1)[0]
        if request_line.startswith(b"PUT ") and b"engine.pt" in request_line:
            seen.append(request_line)
            return len(seen) == 2
        return False

    return trigger


@ON_RAY
def test_store_outage_during_checkpoint_keeps_previous_checkpoint(
    s3_dataset, s3_endpoint, mlflow_db, monkeypatch
) -> None:
    """The object store stops answering while the step-8 checkpoint uploads: the run fails with the store's
    error, the step-4 checkpoint is intact and loads, and once the store is back a rerun resumes from it."""
    import torch
    from s3_outage import OutageProxy

    seen: list[bytes] = []
    upstream = urlparse(s3_endpoint)
    proxy = OutageProxy((upstream.hostname, upstream.port), _second_checkpoint_upload(seen))
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)  # the run store (and its pickled fs) goes via the proxy
    tracking, store = mlflow_db, "s3://pretrain-runs/outage"
    config = ("train.max_failures=0", "tracking.register=false")
    try:
        with pytest.raises(Exception):  # noqa: B017 - whatever Ray Train wraps the storage error in
            run_pretraining(tiny_config(s3_dataset, store, tracking, "outage", *config))
        assert proxy.triggered.is_set() and len(seen) >= 2, seen
        proxy.recover()
        loc = resolve(store).child("outage")
        metas = [f.path for f in list_files(loc) if f.path.endswith("meta.json")]
        steps = {json.loads(loc.fs.open_input_stream(m).read())["step"]: m for m in metas}
        assert 4 in steps, f"previous checkpoint missing: {sorted(steps)}"
        engine_file = steps[4].replace("meta.json", "engine.pt")
        with loc.fs.open_input_stream(engine_file) as f:
            state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
        assert state["step"] == 4 and state["model"], "the step-4 checkpoint does not load"
        again = run_pretraining(tiny_config(s3_dataset, store, tracking, "outage", *config))
    finally:
        proxy.close()
    assert again.steps == 12
    resumed = metric_steps(tracking, again.run_id, "resumed_from_step")
    assert resumed == [4], resumed
