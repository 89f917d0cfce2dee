"""``brainjepa pretrain``: a distributed pretraining run, tracked in MLflow.

Resolves the config, the dataset and the brain gradients, creates (or, on a rerun, reuses) the
MLflow run, builds a ``TorchTrainer`` over the streaming datasets (:mod:`brainjepa_platform.train.trainer`)
and, when training is done,
registers the target encoder as a new version of the registered model under an alias (by default
``brainjepa-encoder-<atlas>-<n_rois>``, so only runs on the same atlas move that alias).
A rerun of the same command with the same ``train.storage_path``/``train.name`` resumes from the
newest intact checkpoint (Ray Train restores runs by storage path and name); a rerun of a finished run
starts no training workers: it registers the final checkpoint again. While a run is going, a
lock file in that folder (``run_lock``) refuses a second run on it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainjepa.config import to_dict
from brainjepa.gradients import GradientArtifact
from brainjepa_platform.cluster.connect import init_ray
from brainjepa_platform.data.manifest import Manifest, read_manifest
from brainjepa_platform.storage import (
    Location,
    ensure_bucket,
    exists,
    read_json,
    resolve,
    write_json,
)
from brainjepa_platform.tracking.uri import using_tracking_uri
from brainjepa_platform.train.checkpoints import Selection, finished_checkpoint, read_local_checkpoint, run_location
from brainjepa_platform.train.config import PretrainConfig
from brainjepa_platform.train.run_lock import RunLock
from brainjepa_platform.train.streaming import build_datasets
from brainjepa_platform.train.trainer import check_resumable, make_trainer, resolve_gradients

RUN_FILE = "brainjepa_run.json"


@dataclass
class PretrainResult:
    run_id: str
    steps: int
    checkpoint: str | None
    model_version: str | None
    metrics: dict[str, Any]


def start_or_resume_run(
    cfg: PretrainConfig, tracking_uri: str, run_dir: Location, manifest: Manifest, artifact: GradientArtifact | None
) -> str:
    """The MLflow run of this training run: reused on a rerun, else created with params and artifacts."""
    import mlflow

    from brainjepa_platform.tracking.params import log_params
    from brainjepa_platform.tracking.registry import log_run_artifacts
    from brainjepa_platform.tracking.store import ensure_experiment

    resolved = to_dict(cfg)
    state = run_dir.child(RUN_FILE)
    if exists(state):
        saved = read_json(state)
        check_resumable(saved["config"], resolved, run_dir.uri)
        return saved["run_id"]
    experiment_id = ensure_experiment(cfg.tracking.experiment, tracking_uri)
    with (
        using_tracking_uri(tracking_uri),
        mlflow.start_run(experiment_id=experiment_id, run_name=cfg.train.name) as run,
    ):
        log_params(resolved)
        log_params(
            {
                "dataset": {
                    "scans": manifest.counts.scans,
                    "atlas": manifest.atlas.name,
                    "subjects": manifest.counts.subjects,
                }
            }
        )
        log_run_artifacts(
            config=resolved,
            gradients=None if artifact is None else artifact.gradients,
            stats=None if manifest.robust_stats is None else manifest.stats(),
            roi_labels=list(manifest.atlas.roi_labels),
            atlas=manifest.atlas.name,
        )
        if artifact is not None:
            with tempfile.TemporaryDirectory() as tmp:
                artifact.save(Path(tmp) / "gradients.npz")  # with labels, parameters and provenance
                mlflow.log_artifact(str(Path(tmp) / "gradients.npz"), artifact_path="run")
        run_id = run.info.run_id
    write_json(state, {"run_id": run_id, "config": resolved})
    return run_id


def register_encoder(
    cfg: PretrainConfig,
    tracking_uri: str,
    run_id: str,
    checkpoint: Any,
    manifest: Manifest,
    artifact: GradientArtifact | None,
    metrics: dict[str, Any] | None = None,
) -> str:
    """Log the final target encoder as a pyfunc embedding model and register it under the alias; the
    version is tagged with the steps, dataset and the final loss and monitors (``metrics``: the last report)."""
    import mlflow

    from brainjepa_platform.tracking.registry import log_encoder, training_tags

    with checkpoint.as_directory() as d:
        state = read_local_checkpoint(Path(d))
    prefix = "target_encoder."
    encoder_state = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    with using_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id):
        return log_encoder(
            encoder_state,
            cfg.model,
            gradients=None if artifact is None else artifact.gradients,
            stats=manifest.stats(),
            roi_labels=list(manifest.atlas.roi_labels),
            atlas=manifest.atlas.name,
            registered_name=cfg.tracking.registered_model or None,
            alias=cfg.tracking.alias,
            target_tr=cfg.data.target_tr,
            version_tags=training_tags((metrics or {}).get("step", cfg.train.steps), cfg.data.dataset, metrics),
        )


@dataclass
class OpenedRun:
    """A run's dataset manifest, gradient artifact (with the model's columns) and MLflow run id."""

    manifest: Manifest
    artifact: GradientArtifact | None
    run_id: str
    gradients: np.ndarray | None


@dataclass
class PreparedRun(OpenedRun):
    """Everything a run's trainer needs: an opened run, its streaming datasets and the train-loop config."""

    datasets: dict[str, Any]
    loop_config: dict[str, Any]


def open_run(cfg: PretrainConfig, tracking_uri: str) -> OpenedRun:
    """Gradients and the MLflow run of ``cfg`` (resumed, after checking the settings, when its run directory
    holds one)."""
    run_dir = run_location(cfg.train.storage_path, cfg.train.name)
    manifest = read_manifest(cfg.data.dataset)
    artifact = resolve_gradients(cfg, manifest, run_dir)
    run_id = start_or_resume_run(cfg, tracking_uri, run_dir, manifest, artifact)
    gradients = None if artifact is None else np.asarray(artifact.gradients[:, : cfg.model.n_gradients])
    return OpenedRun(manifest, artifact, run_id, gradients)


def prepare_run(cfg: PretrainConfig, tracking_uri: str) -> PreparedRun:
    """Datasets, gradients and the MLflow run of ``cfg`` (resumed when its run directory exists)."""
    samples_needed = cfg.train.steps * cfg.train.batch_size * cfg.optim.accumulation_steps * cfg.train.num_workers
    train_ds, val_ds, _ = build_datasets(cfg.data.dataset, cfg.model, cfg.data, samples_needed, seed=cfg.train.seed)
    run = open_run(cfg, tracking_uri)
    loop_config = {"cfg": to_dict(cfg), "gradients": run.gradients, "run_id": run.run_id, "tracking_uri": tracking_uri}
    return PreparedRun(**vars(run), datasets={"train": train_ds, "val": val_ds}, loop_config=loop_config)


@dataclass
class TrainedRun:
    """The outcome of a run's training: its final checkpoint (a Ray Train ``Checkpoint``) and last report."""

    run: OpenedRun
    checkpoint: Any
    metrics: dict[str, Any]


def train_run(cfg: PretrainConfig, tracking_uri: str) -> TrainedRun:
    """Train (or resume) the run on Ray Train; its error, if any, is raised."""
    run = prepare_run(cfg, tracking_uri)
    result = make_trainer(cfg, run.datasets, run.loop_config).fit()
    if result.error is not None:
        raise result.error
    return TrainedRun(run, result.checkpoint, dict(result.metrics))


def reuse_finished_run(cfg: PretrainConfig, tracking_uri: str, finished: Selection) -> TrainedRun:
    """A rerun of a finished run: no training workers, the final checkpoint and its report as they are (the
    settings still checked, ``resumed_from_step`` logged as a resumed run logs it)."""
    import ray.train
    from mlflow.tracking import MlflowClient

    run = open_run(cfg, tracking_uri)
    step = int(finished.step or 0)
    MlflowClient(tracking_uri).log_metric(run.run_id, "resumed_from_step", step, step=step)
    note = f"{cfg.train.name} finished at step {step} ({finished.uri}): nothing to train"
    print(f"brainjepa pretrain: {note}", flush=True)
    where = resolve(finished.uri)
    metrics = {"step": step, **finished.meta.get("metrics", {})}
    return TrainedRun(run, ray.train.Checkpoint(where.path, filesystem=where.fs), metrics)


def run_pretraining(cfg: PretrainConfig) -> PretrainResult:
    """Pretrain on ``cfg.data.dataset``; resume when the same run already has checkpoints (a finished run is
    registered again from its final checkpoint without starting training)."""
    from brainjepa_platform.tracking.names import encoder_model_name
    from brainjepa_platform.tracking.store import default_tracking_uri

    if not cfg.data.dataset:
        raise ValueError("data.dataset is empty: pass data.dataset=URI of an ingested dataset")
    atlas = read_manifest(cfg.data.dataset).atlas
    if cfg.model.n_rois == 0:  # take the ROI count from the dataset
        cfg.model.n_rois = atlas.n_rois
    if not cfg.tracking.registered_model:  # named after what the model accepts
        cfg.tracking.registered_model = encoder_model_name(atlas.name, atlas.n_rois)
    init_ray()
    tracking_uri = cfg.tracking.tracking_uri or default_tracking_uri()
    ensure_bucket(resolve(cfg.train.storage_path))
    run_dir = run_location(cfg.train.storage_path, cfg.train.name)
    with RunLock(run_dir):
        finished = finished_checkpoint(run_dir, cfg.train.steps)
        trained = train_run(cfg, tracking_uri) if finished is None else reuse_finished_run(cfg, tracking_uri, finished)
        version = None
        if cfg.tracking.register and trained.checkpoint is not None:
            run = trained.run
            version = register_encoder(
                cfg, tracking_uri, run.run_id, trained.checkpoint, run.manifest, run.artifact, trained.metrics
            )
    return PretrainResult(
        run_id=trained.run.run_id,
        steps=int(trained.metrics.get("step", 0)),
        checkpoint=None if trained.checkpoint is None else trained.checkpoint.path,
        model_version=version,
        metrics=trained.metrics,
    )
