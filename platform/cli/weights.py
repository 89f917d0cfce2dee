"""``brainjepa import-checkpoint`` and ``brainjepa export-checkpoint``: the authors' checkpoint format."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from brainjepa_platform.cli.options import add_command, base_options, shortcut

if TYPE_CHECKING:
    from brainjepa_platform.cli.commands import ExportOptions
    from brainjepa_platform.cli.model_commands import ImportCommand


def cmd_import_checkpoint(opts: ImportCommand, args: argparse.Namespace) -> int:
    from brainjepa_platform.tracking.authors_checkpoints import ImportRequest, import_checkpoint
    from brainjepa_platform.tracking.store import check_tracking_uri

    tracking_uri = check_tracking_uri(opts.tracking_uri or None)
    request = base_options(opts, ImportRequest)
    result = import_checkpoint(request, tracking_uri)
    cfg = result.config
    print(
        f"Imported the {opts.which} encoder of {opts.checkpoint} (epoch {result.epoch}): width {cfg.dim}, "
        f"{cfg.depth} blocks, {cfg.heads} heads, {cfg.n_rois} ROIs x {cfg.frames} frames (patch {cfg.patch}), "
        f"{cfg.n_gradients} gradients, target TR {opts.tr}s, in {result.seconds:.1f}s"
    )
    if result.stats_missing:
        print(
            "  no --stats: the model has no robust-scaling statistics of its own; embed and evaluate it with "
            "--scaling dataset (the default)"
        )
    print(result.model_uri)
    return 0


def cmd_export_checkpoint(opts: ExportOptions, args: argparse.Namespace) -> int:
    from brainjepa_platform.tracking.authors_checkpoints import export_checkpoint

    path, parts = export_checkpoint(opts.source, opts.out)
    print(f"Wrote {path} in the authors' layout ({', '.join(parts)}; DDP 'module.' prefixes, no optimizer state)")
    if "predictor" not in parts:
        print(
            "  a registered model holds the target encoder only: their downstream scripts read it; to resume "
            "their pretraining, export a pretraining checkpoint (engine.pt) instead"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "import-checkpoint",
        "model_commands:ImportCommand",
        cmd_import_checkpoint,
        help="register a checkpoint written by the authors' Brain-JEPA code",
        positionals=(("checkpoint", "their save_checkpoint file (path, file:// or s3://)"),),
    )
    shortcut(
        p,
        "--gradients",
        key="gradients",
        help="their gradient_mapping_*.csv (R x m, no header) or a brainjepa gradient artifact (.npz)",
    )
    shortcut(
        p,
        "--labels",
        key="labels",
        help="ROI labels in the model's order",
        default_help="the authors' order, 50 Tian-S3 subcortical ROIs then Schaefer-400, for 450 ROIs",
    )
    shortcut(
        p,
        "--stats",
        key="stats",
        help=".npz with per-ROI 'median' and 'iqr' of the pretraining cohort",
        default_help="none; embed then needs --scaling dataset",
    )
    shortcut(
        p, "--tr", key="tr", type=float, help="seconds between the model's frames", default_help="{default}, UKB's"
    )
    shortcut(p, "--name", key="name", help="registered model name")
    shortcut(p, "--which", key="which", choices=["target", "context"], help="which encoder to register")
    shortcut(p, "--heads", key="heads", type=int, help="attention heads", default_help="the ViT preset of the width")
    shortcut(p, "--atlas", key="atlas", help="atlas name recorded with the model")
    shortcut(
        p,
        "--tracking-uri",
        key="tracking_uri",
        help="MLflow tracking URI",
        default_help="MLFLOW_TRACKING_URI or ./mlflow.db",
    )

    p = add_command(
        sub,
        "export-checkpoint",
        "ExportOptions",
        cmd_export_checkpoint,
        help="write a model in the authors' checkpoint layout",
        positionals=(
            (
                "source",
                "models:/NAME/VERSION (or @ALIAS, runs:/...) or a pretraining checkpoint (engine.pt or its folder)",
            ),
        ),
    )
    shortcut(p, "--out", key="out", metavar="CKPT", help="file to write (path, file:// or s3://)")
