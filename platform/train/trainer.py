"""The Ray Train side of a pretraining run: what may change on a resume, the run's gradient artifact and
the ``TorchTrainer`` over the streaming datasets (no MLflow here: :mod:`brainjepa_platform.tracking.pretraining`
wraps a run in an MLflow run and registers its encoder)."""

from __future__ import annotations

import io
from typing import Any

from brainjepa.config import ConfigError, flatten, from_dict, to_dict
from brainjepa.gradients import GradientArtifact, GradientParams, GradientProvenance, gradient_artifact
from brainjepa_platform.data.cohort_fc import SubjectFilter, dataset_group_fc
from brainjepa_platform.data.manifest import Manifest
from brainjepa_platform.storage import Location, exists, read_bytes, resolve, run_filesystem, write_bytes
from brainjepa_platform.train.config import PretrainConfig

# settings that may change between a run and its resumption (scale, tracking), everything else must not
RESUMABLE_CHANGES = (
    "train.num_workers",
    "train.use_gpu",
    "train.cpus_per_worker",
    "train.max_failures",
    "train.log_every",
    "tracking.",
)


def changed_settings(saved: dict[str, Any], current: dict[str, Any], may_change: tuple[str, ...]) -> str:
    """``"key: old -> new, ..."`` (at most 8) for the dotted keys that differ, other than those starting with one
    of ``may_change``; empty when nothing else changed."""
    a, b = flatten(saved), flatten(current)
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(may_change))
    return ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed[:8])


def with_current_defaults(cls: type, saved: dict[str, Any]) -> dict[str, Any]:
    """``saved`` (a config as an earlier version saved it) read as today's ``cls`` reads it: keys added to
    ``cls`` since then take their defaults, which keep the earlier behaviour (e.g. ``masks.in_block_scale``),
    so a run or sweep started before an upgrade still resumes; ``saved`` as it is when ``cls`` cannot read it."""
    try:
        return to_dict(from_dict(cls, saved))
    except (ConfigError, TypeError, ValueError):
        return saved


def check_resumable(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Refuse to resume a run whose settings changed (other than scale and tracking); settings that the
    saved config predates count as their defaults."""
    details = changed_settings(
        with_current_defaults(PretrainConfig, saved), with_current_defaults(PretrainConfig, current), RESUMABLE_CHANGES
    )
    if details:
        raise ValueError(
            f"{where} holds a run started with other settings ({details}); resume it with the same config, "
            "or choose a new train.name"
        )


def resolve_gradients(cfg: PretrainConfig, manifest: Manifest, run_dir: Location) -> GradientArtifact | None:
    """The gradient artifact: given by URI (checked against the dataset's ROIs) or computed from the
    training subjects' group FC, saved next to the run so a resumed run uses the same one."""
    if cfg.model.positional != "gradient":
        return None
    saved = run_dir.child("gradients.npz")
    if exists(saved):
        return GradientArtifact.load(io.BytesIO(read_bytes(saved)))
    if cfg.gradients:
        artifact = GradientArtifact.load(io.BytesIO(read_bytes(resolve(cfg.gradients))))
        if list(artifact.roi_labels) != list(manifest.atlas.roi_labels):
            raise ValueError(f"gradients {cfg.gradients} were computed for other ROIs than dataset {cfg.data.dataset}")
    else:
        fc, n_scans = dataset_group_fc(cfg.data.dataset, SubjectFilter(cfg.data.val_fraction, cfg.data.split_seed))
        params = GradientParams(n_components=min(max(cfg.model.n_gradients, 30), fc.shape[0] - 1))
        provenance = GradientProvenance(
            atlas=manifest.atlas.name,
            source=cfg.data.dataset,
            cohort="training subjects of the pretraining split",
            n_scans=n_scans,
        )
        artifact = gradient_artifact(fc, params, provenance, roi_labels=list(manifest.atlas.roi_labels))
    if artifact.gradients.shape[1] < cfg.model.n_gradients:
        raise ValueError(
            f"gradient artifact has {artifact.gradients.shape[1]} components, model.n_gradients={cfg.model.n_gradients}"
        )
    buf = io.BytesIO()
    artifact.save(buf)
    write_bytes(saved, buf.getvalue())
    return artifact


def make_trainer(
    cfg: PretrainConfig, datasets: dict[str, Any], loop_config: dict[str, Any], callbacks: list[Any] | None = None
) -> Any:
    """The TorchTrainer of a run (``callbacks``: Ray Train user callbacks, e.g. Tune's report callback)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    root = resolve(cfg.train.storage_path)
    scaling = ray.train.ScalingConfig(
        num_workers=cfg.train.num_workers,
        use_gpu=cfg.train.use_gpu,
        resources_per_worker={"CPU": cfg.train.cpus_per_worker},
    )
    run_config = ray.train.RunConfig(
        name=cfg.train.name,
        storage_path=root.path,
        storage_filesystem=run_filesystem(root),
        failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        callbacks=callbacks,
    )
    from brainjepa_platform.train.loop import train_loop_per_worker

    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=scaling,
        run_config=run_config,
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        torch_config=TorchConfig(backend="nccl" if cfg.train.use_gpu else "gloo"),
    )
