"""``brainjepa embed``, ``brainjepa evaluate`` and ``brainjepa fingerprint``: a registered encoder on an ingested
cohort."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from brainjepa_platform.cli.options import add_command, shortcut

if TYPE_CHECKING:
    from brainjepa_platform.cli.commands import EmbedOptions
    from brainjepa_platform.evaluate.fingerprint import FingerprintConfig
    from brainjepa_platform.evaluate.run import EvaluateConfig
    from brainjepa_platform.tracking.bundle import EncoderBundle

MODEL_DEFAULT = "models:/brainjepa-encoder-<atlas>-<n_rois>@current of the dataset's atlas"
"""What an empty ``model`` stands for."""


def cmd_embed(opts: EmbedOptions, args: argparse.Namespace) -> int:
    import mlflow

    from brainjepa_platform.cluster.connect import init_ray
    from brainjepa_platform.evaluate.embed import default_model_uri, embed_dataset, write_embeddings
    from brainjepa_platform.tracking.registry import load_encoder, resolve_model_uri
    from brainjepa_platform.tracking.store import check_tracking_uri

    opts.model = opts.model or default_model_uri(opts.data)
    check_tracking_uri(mlflow.get_tracking_uri())
    bundle = load_encoder(opts.model)  # a model the registry does not know fails here, before Ray starts
    init_ray()
    emb = embed_dataset(
        bundle,
        opts.data,
        target_tr=opts.target_tr or None,
        scaling=opts.scaling,
        per_roi=opts.per_roi,
        batch_size=opts.batch_size,
        workers=opts.workers,
        token_fc=opts.token_fc,
    )
    path = write_embeddings(
        emb,
        opts.out,
        {"model": resolve_model_uri(opts.model), "data": opts.data, "scaling": opts.scaling, "atlas": bundle.atlas},
    )
    print(
        f"Embedded {len(emb.scan_ids)} scans ({emb.features.shape[1]} dimensions"
        f"{', per ROI too' if emb.per_roi is not None else ''}"
        f"{', token-FC too' if emb.token_fc is not None else ''}) into {path}"
    )
    for s in emb.skipped:
        print(f"  skipped {s['scan_id']}: {s['reason']}")
    return 0


def load_model_and_start_ray(cfg: EvaluateConfig | FingerprintConfig) -> tuple[EncoderBundle, str]:
    """``evaluate`` / ``fingerprint``: fill in the default model, check the tracking URIs it loads from and logs
    to, load the encoder (a model the registry does not know fails here, before Ray starts), start Ray; returns
    the encoder and the tracking URI to log to."""
    import mlflow

    from brainjepa_platform.cluster.connect import init_ray
    from brainjepa_platform.evaluate.embed import default_model_uri
    from brainjepa_platform.tracking.registry import load_encoder
    from brainjepa_platform.tracking.store import check_tracking_uri, default_tracking_uri

    cfg.model = cfg.model or default_model_uri(cfg.data)
    tracking_uri = cfg.tracking_uri or default_tracking_uri()
    for uri in {mlflow.get_tracking_uri(), tracking_uri}:  # load, log
        check_tracking_uri(uri)
    bundle = load_encoder(cfg.model)
    init_ray()
    return bundle, tracking_uri


def cmd_evaluate(cfg: EvaluateConfig, args: argparse.Namespace) -> int:
    from brainjepa_platform.cluster.connect import run_interruptible
    from brainjepa_platform.evaluate.run import log_evaluation, run_evaluation
    from brainjepa_platform.tracking.registry import resolve_model_uri

    bundle, tracking_uri = load_model_and_start_ray(cfg)
    evaluation = run_interruptible(run_evaluation, cfg, bundle)  # Ctrl-C reaches this command (fine-tuning)
    run_id = log_evaluation(evaluation, cfg, tracking_uri)
    print(
        f"{cfg.target} ({evaluation.comparison.task}, {cfg.mode}, {cfg.seeds} seeds, {evaluation.n_scans} scans"
        f"{f', {evaluation.dropped} without a value left out' if evaluation.dropped else ''}); "
        f"model {resolve_model_uri(cfg.model)}"
    )
    print(evaluation.comparison.format_table())
    print(f"results: {evaluation.files['results']}; plot: {evaluation.files['plot']}; MLflow run {run_id}")
    return 0


def cmd_fingerprint(cfg: FingerprintConfig, args: argparse.Namespace) -> int:
    """Load the model, fingerprint the cohort with it, random draws and FC, log the run, print the table."""
    from brainjepa.config import to_dict
    from brainjepa_platform.evaluate.fingerprint import run_fingerprint
    from brainjepa_platform.evaluate.run import log_summary_run
    from brainjepa_platform.tracking.registry import resolve_model_uri

    bundle, tracking_uri = load_model_and_start_ray(cfg)
    result = run_fingerprint(cfg, bundle)
    run_id = log_summary_run(
        to_dict(cfg), cfg.experiment, f"fingerprint-{cfg.centring}", result.summary(), result.files, tracking_uri
    )
    print(
        f"Fingerprinting {result.n_subjects} subjects across sessions ({result.n_scans} scans, chance "
        f"{1 / result.n_subjects:.3f}, centring {cfg.centring}, {cfg.random_draws} random draws); "
        f"model {resolve_model_uri(cfg.model)}"
    )
    print(result.format_table())
    print(f"results: {result.files['results']}; plot: {result.files['plot']}; MLflow run {run_id}")
    return 0


def model_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the encoder and how series are fed to it, shared by ``embed``, ``evaluate`` and
    ``fingerprint``."""
    shortcut(p, "--model", key="model", help="MLflow model URI", default_help=MODEL_DEFAULT)
    shortcut(
        p,
        "--scaling",
        key="scaling",
        choices=["dataset", "model"],
        help="robust scaling with the dataset's statistics or the model's pretraining cohort's",
    )
    shortcut(
        p, "--target-tr", key="target_tr", type=float, help="seconds between model frames", default_help="the model's"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "embed",
        "EmbedOptions",
        cmd_embed,
        help="embed every scan of an ingested dataset with a registered encoder",
    )
    model_flags(p)
    shortcut(p, "--data", key="data", help="ingested dataset URI (path, file:// or s3://)")
    shortcut(p, "--out", key="out", help="output folder URI (embeddings.parquet + embeddings.json)")
    shortcut(p, "--per-roi", key="per_roi", action="store_true", help="also write per-ROI embeddings")
    shortcut(
        p,
        "--token-fc",
        key="token_fc",
        action="store_true",
        help="also write each scan's token-FC (ROI x ROI correlation of its tokens; R*(R-1)/2 values a scan)",
    )
    shortcut(p, "--batch-size", key="batch_size", type=int, help="windows per encoder forward pass")
    shortcut(p, "--workers", key="workers", type=int, help="Ray Data actors (one GPU each on a GPU cluster)")

    p = add_command(
        sub,
        "evaluate",
        "brainjepa_platform.evaluate.run:EvaluateConfig",
        cmd_evaluate,
        help="linear probe / fine-tune a registered encoder vs FC and random baselines",
        overrides_help="config overrides, e.g. finetune.epochs=20 finetune.layer_decay=0.65 fractions=[0.7,0.1,0.2]",
    )
    model_flags(p)
    shortcut(p, "--data", key="data", help="ingested dataset URI with the target as a phenotype column")
    shortcut(p, "--target", key="target", help="phenotype column, e.g. age, sex")
    shortcut(
        p,
        "--task",
        key="task",
        choices=["auto", "classification", "regression"],
        help="kind of target",
        default_help="{default}, inferred from the target column",
    )
    shortcut(p, "--mode", key="mode", choices=["linear", "finetune"], help="linear probe or fine-tuning")
    shortcut(p, "--seeds", key="seeds", type=int, help="repeated subject-level splits")
    shortcut(
        p,
        "--split-column",
        key="split_column",
        help="phenotype column holding train/val/test per scan",
        default_help="random subject-level splits per seed",
    )
    shortcut(p, "--workers", key="workers", type=int, help="Ray Data actors (and Ray Train workers when fine-tuning)")
    shortcut(p, "--out", key="out", help="folder for table.txt, results.json and the plot")

    p = add_command(
        sub,
        "fingerprint",
        "brainjepa_platform.evaluate.fingerprint:FingerprintConfig",
        cmd_fingerprint,
        help="subject fingerprinting across sessions: a registered encoder vs random encoders and FC",
    )
    model_flags(p)
    shortcut(p, "--data", key="data", help="ingested dataset URI with several sessions per subject")
    shortcut(
        p,
        "--centring",
        key="centring",
        choices=["cohort", "none"],
        help="subtract the scored scans' mean feature vector before matching, or not",
    )
    shortcut(p, "--random-draws", key="random_draws", type=int, help="randomly initialised encoders to compare with")
    shortcut(p, "--workers", key="workers", type=int, help="Ray Data actors (one GPU each on a GPU cluster)")
    shortcut(p, "--out", key="out", help="folder for table.txt, results.json and the plot")
