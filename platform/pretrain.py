"""``brainjepa pretrain``: the driver of a distributed pretraining run.

Resolves the config, the dataset and the brain gradients, creates (or, on a rerun, reuses) the
MLflow run, builds a ``TorchTrainer`` over the streaming datasets and, when training is done,
registers the target encoder as a new version of the registered model under an alias (by default
``brainjepa-encoder-<atlas>-<n_rois>``, so only runs on the same atlas move that alias).
A rerun of the same command with the same ``train.storage_path``/``train.name`` resumes from the
newest intact checkpoint (Ray Train restores runs by storage path and name); while a run is going, a
lock file in that folder (``run_lock``) refuses a second run on it.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainjepa.config import to_dict
from brainjepa.gradients import GradientArtifact, GradientParams, GradientProvenance, gradient_artifact
from brainjepa_platform.checkpoints import read_local_checkpoint, run_location
from brainjepa_platform.cluster import init_ray
from brainjepa_platform.cohort_fc import SubjectFilter, dataset_group_fc
from brainjepa_platform.ingest import read_manifest
from brainjepa_platform.pretrain_config import PretrainConfig
from brainjepa_platform.run_lock import RunLock
from brainjepa_platform.storage import (
    Location,
    ensure_bucket,
    exists,
    read_bytes,
    read_json,
    resolve,
    run_filesystem,
    write_bytes,
    write_json,
)
from brainjepa_platform.streaming import build_datasets

RUN_FILE = "brainjepa_run.json"
# settings that may change between a run and its resumption (scale, tracking), everything else must not
RESUMABLE_CHANGES = ("train.num_workers", "train.use_gpu", "train.cpus_per_worker", "train.max_failures",
                     "train.log_every", "tracking.")


@dataclass
class PretrainResult:
    run_id: str
    steps: int
    checkpoint: str | None
    model_version: str | None
    metrics: dict[str, Any]


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def check_resumable(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Refuse to resume a run whose settings changed (other than scale and tracking)."""
    a, b = _flat(saved), _flat(current)
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_CHANGES))
    if changed:
        details = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed[:8])
        raise ValueError(
            f"{where} holds a run started with other settings ({details}); resume it with the same config, "
            "or choose a new train.name"
        )


def resolve_gradients(cfg: PretrainConfig, manifest: dict[str, Any], run_dir: Location) -> GradientArtifact | None:
    """The gradient artifact: given by URI (checked against the dataset's ROIs) or computed from the
    training subjects' group FC, saved next to the run so a resumed run uses the same one."""
    if cfg.model.positional != "gradient":
        return None
    saved = run_dir.child("gradients.npz")
    if exists(saved):
        return GradientArtifact.load(io.BytesIO(read_bytes(saved)))
    if cfg.gradients:
        artifact = GradientArtifact.load(io.BytesIO(read_bytes(resolve(cfg.gradients))))
        if list(artifact.roi_labels) != list(manifest["atlas"]["roi_labels"]):
            raise ValueError(f"gradients {cfg.gradients} were computed for other ROIs than dataset {cfg.data.dataset}")
    else:
        fc, n_scans = dataset_group_fc(cfg.data.dataset, SubjectFilter(cfg.data.val_fraction, cfg.data.split_seed))
        params = GradientParams(n_components=min(max(cfg.model.n_gradients, 30), fc.shape[0] - 1))
        provenance = GradientProvenance(atlas=manifest["atlas"]["name"], source=cfg.data.dataset,
                                        cohort="training subjects of the pretraining split", n_scans=n_scans)
        artifact = gradient_artifact(fc, params, provenance, roi_labels=manifest["atlas"]["roi_labels"])
    if artifact.gradients.shape[1] < cfg.model.n_gradients:
        raise ValueError(f"gradient artifact has {artifact.gradients.shape[1]} components, model.n_gradients="
                         f"{cfg.model.n_gradients}")
    buf = io.BytesIO()
    artifact.save(buf)
    write_bytes(saved, buf.getvalue())
    return artifact


def start_or_resume_run(cfg: PretrainConfig, tracking_uri: str, run_dir: Location,
                        manifest: dict[str, Any], artifact: GradientArtifact | None) -> str:
    """The MLflow run of this training run: reused on a rerun, else created with params and artifacts."""
    import mlflow

    from brainjepa_platform import tracking

    resolved = to_dict(cfg)
    state = run_dir.child(RUN_FILE)
    if exists(state):
        saved = read_json(state)
        check_resumable(saved["config"], resolved, run_dir.uri)
        return saved["run_id"]
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = tracking.ensure_experiment(cfg.tracking.experiment, tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id, run_name=cfg.train.name) as run:
        tracking.log_params(resolved)
        tracking.log_params({"dataset": {"scans": manifest["counts"]["scans"], "atlas": manifest["atlas"]["name"],
                                         "subjects": manifest["counts"]["subjects"]}})
        tracking.log_run_artifacts(config=resolved, gradients=None if artifact is None else artifact.gradients,
                                   stats=manifest["robust_stats"], roi_labels=manifest["atlas"]["roi_labels"],
                                   atlas=manifest["atlas"]["name"])
        if artifact is not None:
            with tempfile.TemporaryDirectory() as tmp:
                artifact.save(Path(tmp) / "gradients.npz")  # with labels, parameters and provenance
                mlflow.log_artifact(str(Path(tmp) / "gradients.npz"), artifact_path="run")
        run_id = run.info.run_id
    write_json(state, {"run_id": run_id, "config": resolved})
    return run_id


def make_trainer(cfg: PretrainConfig, datasets: dict[str, Any], loop_config: dict[str, Any],
                 callbacks: list[Any] | None = None) -> Any:
    """The TorchTrainer of a run (``callbacks``: Ray Train user callbacks, e.g. Tune's report callback)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    root = resolve(cfg.train.storage_path)
    scaling = ray.train.ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                                      resources_per_worker={"CPU": cfg.train.cpus_per_worker})
    run_config = ray.train.RunConfig(
        name=cfg.train.name, storage_path=root.path, storage_filesystem=run_filesystem(root),
        failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2), callbacks=callbacks,
    )
    from brainjepa_platform.train_loop import train_loop_per_worker

    return TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config, scaling_config=scaling, run_config=run_config,
        datasets=datasets, dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        torch_config=TorchConfig(backend="nccl" if cfg.train.use_gpu else "gloo"),
    )


def register_encoder(cfg: PretrainConfig, tracking_uri: str, run_id: str, checkpoint: Any,
                     manifest: dict[str, Any], artifact: GradientArtifact | None,
                     metrics: dict[str, Any] | None = None) -> str:
    """Log the final target encoder as a pyfunc embedding model and register it under the alias; the
    version is tagged with the steps, dataset and the final loss and monitors (``metrics``: the last report)."""
    import mlflow

    from brainjepa.preprocess import RobustStats
    from brainjepa_platform import tracking

    with checkpoint.as_directory() as d:
        state = read_local_checkpoint(Path(d))
    prefix = "target_encoder."
    encoder_state = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        return tracking.log_encoder(
            encoder_state, cfg.model,
            gradients=None if artifact is None else artifact.gradients,
            stats=RobustStats.from_dict(manifest["robust_stats"]),
            roi_labels=manifest["atlas"]["roi_labels"], atlas=manifest["atlas"]["name"],
            registered_name=cfg.tracking.registered_model or None, alias=cfg.tracking.alias,
            target_tr=cfg.data.target_tr,
            version_tags=tracking.training_tags((metrics or {}).get("step", cfg.train.steps), cfg.data.dataset,
                                                metrics),
        )


@dataclass
class PreparedRun:
    """Everything a run's trainer needs: the streaming datasets, the dataset manifest, the gradient
    artifact, the MLflow run (created or reused) and the config handed to every worker."""

    datasets: dict[str, Any]
    manifest: dict[str, Any]
    artifact: GradientArtifact | None
    run_id: str
    gradients: np.ndarray | None
    loop_config: dict[str, Any]


def prepare_run(cfg: PretrainConfig, tracking_uri: str) -> PreparedRun:
    """Datasets, gradients and the MLflow run of ``cfg`` (resumed when its run directory exists)."""
    run_dir = run_location(cfg.train.storage_path, cfg.train.name)
    samples_needed = cfg.train.steps * cfg.train.batch_size * cfg.optim.accumulation_steps * cfg.train.num_workers
    train_ds, val_ds, manifest = build_datasets(cfg.data.dataset, cfg.model, cfg.data, samples_needed,
                                                seed=cfg.train.seed)
    artifact = resolve_gradients(cfg, manifest, run_dir)
    run_id = start_or_resume_run(cfg, tracking_uri, run_dir, manifest, artifact)
    gradients = None if artifact is None else np.asarray(artifact.gradients[:, : cfg.model.n_gradients])
    loop_config = {"cfg": to_dict(cfg), "gradients": gradients, "run_id": run_id, "tracking_uri": tracking_uri}
    return PreparedRun({"train": train_ds, "val": val_ds}, manifest, artifact, run_id, gradients, loop_config)


def run_pretraining(cfg: PretrainConfig) -> PretrainResult:
    """Pretrain on ``cfg.data.dataset``; resume when the same run already has checkpoints."""
    from brainjepa_platform import tracking

    if not cfg.data.dataset:
        raise ValueError("data.dataset is empty: pass data.dataset=URI of an ingested dataset")
    atlas = read_manifest(cfg.data.dataset)["atlas"]
    if cfg.model.n_rois == 0:  # take the ROI count from the dataset
        cfg.model.n_rois = atlas["n_rois"]
    if not cfg.tracking.registered_model:  # named after what the model accepts
        cfg.tracking.registered_model = tracking.encoder_model_name(atlas["name"], atlas["n_rois"])
    init_ray()
    tracking_uri = cfg.tracking.tracking_uri or tracking.default_tracking_uri()
    ensure_bucket(resolve(cfg.train.storage_path))
    with RunLock(run_location(cfg.train.storage_path, cfg.train.name)):
        run = prepare_run(cfg, tracking_uri)
        result = make_trainer(cfg, run.datasets, run.loop_config).fit()
        if result.error is not None:
            raise result.error
        version = None
        if cfg.tracking.register and result.checkpoint is not None:
            version = register_encoder(cfg, tracking_uri, run.run_id, result.checkpoint, run.manifest, run.artifact,
                                       dict(result.metrics))
    return PretrainResult(run_id=run.run_id, steps=int(result.metrics.get("step", 0)),
                          checkpoint=None if result.checkpoint is None else result.checkpoint.path,
                          model_version=version, metrics=dict(result.metrics))
