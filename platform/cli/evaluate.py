"""``brainjepa embed`` and ``brainjepa evaluate``: a registered encoder on an ingested cohort."""

from __future__ import annotations

import argparse


def cmd_embed(args: argparse.Namespace) -> int:
    import mlflow

    from brainjepa_platform.cluster.connect import init_ray
    from brainjepa_platform.evaluate.embed import default_model_uri, embed_dataset, write_embeddings
    from brainjepa_platform.tracking.registry import check_tracking_uri, load_encoder, resolve_model_uri

    args.model = args.model or default_model_uri(args.data)
    check_tracking_uri(mlflow.get_tracking_uri())
    bundle = load_encoder(args.model)  # a model the registry does not know fails here, before Ray starts
    init_ray()
    emb = embed_dataset(bundle, args.data, target_tr=args.target_tr or None, scaling=args.scaling,
                        per_roi=args.per_roi, batch_size=args.batch_size, workers=args.workers)
    path = write_embeddings(emb, args.out, {"model": resolve_model_uri(args.model), "data": args.data,
                                            "scaling": args.scaling, "atlas": bundle.atlas})
    print(f"Embedded {len(emb.scan_ids)} scans ({emb.features.shape[1]} dimensions"
          f"{', per ROI too' if emb.per_roi is not None else ''}) into {path}")
    for s in emb.skipped:
        print(f"  skipped {s['scan_id']}: {s['reason']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import mlflow

    from brainjepa.config import load_config
    from brainjepa_platform.cluster.connect import init_ray, run_interruptible
    from brainjepa_platform.evaluate.embed import default_model_uri
    from brainjepa_platform.evaluate.run import EvaluateConfig, log_evaluation, run_evaluation
    from brainjepa_platform.tracking import registry as tracking

    flags = {"model": args.model, "data": args.data, "target": args.target, "task": args.task, "mode": args.mode,
             "seeds": args.seeds, "split_column": args.split_column, "scaling": args.scaling, "out": args.out,
             "workers": args.workers, "target_tr": args.target_tr}
    cfg = load_config(EvaluateConfig, args.config, [f"{k}={v}" for k, v in flags.items() if v is not None]
                      + args.overrides)
    cfg.model = cfg.model or default_model_uri(cfg.data)
    for uri in {mlflow.get_tracking_uri(), cfg.tracking_uri or tracking.default_tracking_uri()}:  # load, log
        tracking.check_tracking_uri(uri)
    bundle = tracking.load_encoder(cfg.model)  # before Ray starts
    init_ray()
    evaluation = run_interruptible(run_evaluation, cfg, bundle)  # Ctrl-C reaches this command (fine-tuning)
    tracking_uri = cfg.tracking_uri or tracking.default_tracking_uri()
    run_id = log_evaluation(evaluation, cfg, tracking_uri)
    print(f"{cfg.target} ({evaluation.comparison.task}, {cfg.mode}, {cfg.seeds} seeds, {evaluation.n_scans} scans"
          f"{f', {evaluation.dropped} without a value left out' if evaluation.dropped else ''}); "
          f"model {tracking.resolve_model_uri(cfg.model)}")
    print(evaluation.comparison.format_table())
    print(f"results: {evaluation.files['results']}; plot: {evaluation.files['plot']}; MLflow run {run_id}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed every scan of an ingested dataset with a registered encoder")
    p.add_argument("--model", help="MLflow model URI (default: models:/brainjepa-encoder-<atlas>-<n_rois>@current "
                                   "of the dataset's atlas)")
    p.add_argument("--data", required=True, help="ingested dataset URI (path, file:// or s3://)")
    p.add_argument("--out", required=True, help="output folder URI (embeddings.parquet + embeddings.json)")
    p.add_argument("--per-roi", action="store_true", help="also write per-ROI embeddings")
    p.add_argument("--scaling", default="dataset", choices=["dataset", "model"],
                   help="robust scaling with the dataset's statistics (default) or the model's pretraining cohort's")
    p.add_argument("--target-tr", type=float, default=0.0, help="seconds between model frames (default: the model's)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per encoder forward pass")
    p.add_argument("--workers", type=int, default=1, help="Ray Data actors (one GPU each on a GPU cluster)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("evaluate", help="linear probe / fine-tune a registered encoder vs FC and random baselines")
    p.add_argument("--config", help="YAML config (EvaluateConfig); flags and key=value overrides win")
    p.add_argument("--model", help="MLflow model URI (default: models:/brainjepa-encoder-<atlas>-<n_rois>@current "
                                   "of the dataset's atlas)")
    p.add_argument("--data", help="ingested dataset URI with the target as a phenotype column")
    p.add_argument("--target", help="phenotype column, e.g. age, sex")
    p.add_argument("--task", choices=["auto", "classification", "regression"], help="default: inferred")
    p.add_argument("--mode", choices=["linear", "finetune"], help="default linear")
    p.add_argument("--seeds", type=int, help="repeated subject-level splits (default 5)")
    p.add_argument("--split-column", help="phenotype column holding train/val/test per scan")
    p.add_argument("--scaling", choices=["dataset", "model"])
    p.add_argument("--target-tr", type=float)
    p.add_argument("--workers", type=int)
    p.add_argument("--out", help="folder for table.txt, results.json and the plot (default evaluation/)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. finetune.epochs=20 finetune.layer_decay=0.65 fractions=[0.7,0.1,0.2]")
    p.set_defaults(func=cmd_evaluate)
