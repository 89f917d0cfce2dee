"""``brainjepa pretrain``: distributed pretraining on Ray Train from a YAML config + overrides."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from brainjepa_platform.cli.options import add_command

if TYPE_CHECKING:
    from brainjepa_platform.train.config import PretrainConfig


def cmd_pretrain(cfg: PretrainConfig, args: argparse.Namespace) -> int:
    from brainjepa.config import ConfigError
    from brainjepa_platform.cluster.connect import init_ray, run_interruptible
    from brainjepa_platform.data.manifest import read_manifest
    from brainjepa_platform.tracking.pretraining import run_pretraining
    from brainjepa_platform.tracking.store import check_tracking_uri
    from brainjepa_platform.train.checkpoints import run_location

    check_tracking_uri(cfg.tracking.tracking_uri or None)
    if not cfg.data.dataset:
        raise ConfigError("data.dataset is empty: pass data.dataset=URI of an ingested dataset")
    read_manifest(cfg.data.dataset)  # input errors before Ray starts
    args.on_interrupt = (
        f"checkpoints so far are in {run_location(cfg.train.storage_path, cfg.train.name).uri}; "
        "the same command resumes from the newest"
    )
    # in the main thread (Ray sets its SIGTERM handler there; training runs in a worker thread), printing
    # the rank-0 progress lines of the training workers
    init_ray(worker_output=True)
    result = run_interruptible(run_pretraining, cfg)
    print(
        f"Pretraining finished at step {result.steps}: loss {result.metrics.get('loss', float('nan')):.4f}, "
        f"validation loss {result.metrics.get('val_loss', float('nan')):.4f}"
    )
    print(f"  MLflow run {result.run_id}; checkpoint {result.checkpoint}")
    if result.model_version:
        print(
            f"  registered models:/{cfg.tracking.registered_model}/{result.model_version} "
            f"(alias: models:/{cfg.tracking.registered_model}@{cfg.tracking.alias})"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    add_command(
        sub,
        "pretrain",
        "brainjepa_platform.train.config:PretrainConfig",
        cmd_pretrain,
        help="pretrain Brain-JEPA with Ray Train on an ingested dataset",
        config_default="pretrain/tiny",
        overrides_help="config overrides, e.g. data.dataset=s3://bucket/cohort train.num_workers=4",
    )
