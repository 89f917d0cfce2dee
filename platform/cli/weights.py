"""``brainjepa import-checkpoint`` and ``brainjepa export-checkpoint``: the authors' checkpoint format."""

from __future__ import annotations

import argparse


def cmd_import_checkpoint(args: argparse.Namespace) -> int:
    from brainjepa_platform.tracking.authors_checkpoints import ImportRequest, import_checkpoint
    from brainjepa_platform.tracking.registry import check_tracking_uri

    tracking_uri = check_tracking_uri(args.tracking_uri)
    request = ImportRequest(checkpoint=args.checkpoint, gradients=args.gradients, labels=args.labels,
                            stats=args.stats, tr=args.tr, name=args.name, which=args.which, heads=args.heads,
                            atlas=args.atlas)
    result = import_checkpoint(request, tracking_uri)
    cfg = result.config
    print(f"Imported the {args.which} encoder of {args.checkpoint} (epoch {result.epoch}): width {cfg.dim}, "
          f"{cfg.depth} blocks, {cfg.heads} heads, {cfg.n_rois} ROIs x {cfg.frames} frames (patch {cfg.patch}), "
          f"{cfg.n_gradients} gradients, target TR {args.tr}s, in {result.seconds:.1f}s")
    if result.stats_missing:
        print("  no --stats: the model has no robust-scaling statistics of its own; embed and evaluate it with "
              "--scaling dataset (the default)")
    print(result.model_uri)
    return 0


def cmd_export_checkpoint(args: argparse.Namespace) -> int:
    from brainjepa_platform.tracking.authors_checkpoints import export_checkpoint

    path, parts = export_checkpoint(args.source, args.out)
    print(f"Wrote {path} in the authors' layout ({', '.join(parts)}; DDP 'module.' prefixes, no optimizer state)")
    if "predictor" not in parts:
        print("  a registered model holds the target encoder only: their downstream scripts read it; to resume "
              "their pretraining, export a pretraining checkpoint (engine.pt) instead")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-checkpoint", help="register a checkpoint written by the authors' Brain-JEPA code")
    p.add_argument("checkpoint", metavar="CKPT", help="their save_checkpoint file (path, file:// or s3://)")
    p.add_argument("--gradients", required=True,
                   help="their gradient_mapping_*.csv (R x m, no header) or a brainjepa gradient artifact (.npz)")
    p.add_argument("--labels", help="ROI labels in the model's order (default: the authors' order, 50 Tian-S3 "
                                    "subcortical ROIs then Schaefer-400, for 450 ROIs)")
    p.add_argument("--stats", help=".npz with per-ROI 'median' and 'iqr' of the pretraining cohort (default: none; "
                                   "embed then needs --scaling dataset)")
    p.add_argument("--tr", type=float, default=0.735, help="seconds between the model's frames (default UKB 0.735)")
    p.add_argument("--name", default="brainjepa-encoder-imported", help="registered model name")
    p.add_argument("--which", choices=["target", "context"], default="target", help="which encoder to register")
    p.add_argument("--heads", type=int, default=0, help="attention heads (default: the ViT preset of the width)")
    p.add_argument("--atlas", default="", help="atlas name recorded with the model")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.set_defaults(func=cmd_import_checkpoint)

    p = sub.add_parser("export-checkpoint", help="write a model in the authors' checkpoint layout")
    p.add_argument("source", metavar="SOURCE",
                   help="models:/NAME/VERSION (or @ALIAS, runs:/...) or a pretraining checkpoint (engine.pt or its "
                        "folder)")
    p.add_argument("--out", required=True, metavar="CKPT", help="file to write (path, file:// or s3://)")
    p.set_defaults(func=cmd_export_checkpoint)
