"""``brainjepa pretrain``: distributed pretraining on Ray Train from a YAML config + overrides."""

from __future__ import annotations

import argparse


def cmd_pretrain(args: argparse.Namespace) -> int:
    from brainjepa.config import ConfigError, load_config
    from brainjepa_platform.cluster.connect import init_ray, run_interruptible
    from brainjepa_platform.data.ingestion import read_manifest
    from brainjepa_platform.tracking import registry as tracking
    from brainjepa_platform.tracking.pretraining import run_pretraining
    from brainjepa_platform.train.checkpoints import run_location
    from brainjepa_platform.train.config import PretrainConfig

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    tracking.check_tracking_uri(cfg.tracking.tracking_uri or None)
    if not cfg.data.dataset:
        raise ConfigError("data.dataset is empty: pass data.dataset=URI of an ingested dataset")
    read_manifest(cfg.data.dataset)  # input errors before Ray starts
    args.on_interrupt = (f"checkpoints so far are in {run_location(cfg.train.storage_path, cfg.train.name).uri}; "
                         "the same command resumes from the newest")
    # in the main thread (Ray sets its SIGTERM handler there; training runs in a worker thread), printing
    # the rank-0 progress lines of the training workers
    init_ray(worker_output=True)
    result = run_interruptible(run_pretraining, cfg)
    print(f"Pretraining finished at step {result.steps}: loss {result.metrics.get('loss', float('nan')):.4f}, "
          f"validation loss {result.metrics.get('val_loss', float('nan')):.4f}")
    print(f"  MLflow run {result.run_id}; checkpoint {result.checkpoint}")
    if result.model_version:
        print(f"  registered models:/{cfg.tracking.registered_model}/{result.model_version} "
              f"(alias: models:/{cfg.tracking.registered_model}@{cfg.tracking.alias})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="pretrain Brain-JEPA with Ray Train on an ingested dataset")
    p.add_argument("--config", default="configs/pretrain/tiny.yaml", help="YAML config (PretrainConfig)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. data.dataset=s3://bucket/cohort train.num_workers=4")
    p.set_defaults(func=cmd_pretrain)
