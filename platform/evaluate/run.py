"""``brainjepa evaluate``: a registered encoder against baselines on a labelled, ingested cohort.

Three feature sets are always compared on the same subject-level splits, repeated over seeds:
the model's embeddings, a randomly initialised encoder of the same architecture (same gradients and
scaling), and the classic functional-connectivity baseline (upper-triangle Fisher-z FC). ``linear``
mode fits the same regularised linear model (chosen on validation) on each; ``finetune`` mode trains
encoder + pooled LayerNorm + linear head with layer-wise LR decay on Ray Train for the two encoders,
with the FC baseline still linear. Results: a printed table, ``results.json``, a plot, and an MLflow
run with the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from brainjepa.config import to_dict
from brainjepa.heads import FinetuneConfig
from brainjepa.preprocess import tiling_windows
from brainjepa_platform.data.manifest import read_manifest
from brainjepa_platform.data.reader import shard_dataset
from brainjepa_platform.evaluate.embed import (
    Embeddings,
    bundle_target_tr,
    embed_dataset,
    random_encoder_bundle,
    scaled_for,
)
from brainjepa_platform.evaluate.probe import ComparisonResult, compare_features, fc_features, infer_task
from brainjepa_platform.tracking.bundle import EncoderBundle
from brainjepa_platform.tracking.params import redact

MODEL, RANDOM, FC = "brain-jepa", "random-encoder", "fc-baseline"


@dataclass
class EvaluateConfig:
    """What to evaluate, on which cohort and target, and how."""

    model: str = ""
    """MLflow model URI; empty: ``models:/brainjepa-encoder-<atlas>-<n_rois>@current`` of the dataset's atlas."""
    data: str = ""
    """URI of an ingested dataset with the target as a phenotype column."""
    target: str = ""
    task: Literal["auto", "classification", "regression"] = "auto"
    mode: Literal["linear", "finetune"] = "linear"
    seeds: int = 5
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    split_column: str = ""
    """Phenotype column with train/val/test per scan; empty: random subject-level splits per seed."""
    scaling: Literal["dataset", "model"] = "dataset"
    target_tr: float = 0.0
    """Seconds between model frames; 0: the TR the model was pretrained at."""
    workers: int = 1
    """Ray Data embedding actors (and Ray Train workers when fine-tuning)."""
    out: str = "evaluation"
    """Local folder for results.json, table.txt and the plot."""
    tracking_uri: str = ""
    experiment: str = "brainjepa-evaluate"
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


@dataclass
class Evaluation:
    comparison: ComparisonResult
    target: str
    n_scans: int
    dropped: int
    files: dict[str, str]
    run_id: str | None = None


def fc_batch(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Ray Data UDF: scans -> upper-triangle Fisher-z FC."""
    series = [np.asarray(s, np.float32).reshape(int(r), -1) for s, r in zip(batch["series"], batch["n_rois"])]
    return {"scan_id": batch["scan_id"], "fc": fc_features(series)}


def fc_dataset(uri: str, scan_ids: list[str]) -> np.ndarray:
    """(n_scans, R(R-1)/2) FC-baseline features of the given scans, computed with Ray Data."""
    rows = shard_dataset(uri, ["scan_id", "n_rois", "series"]).map_batches(
        fc_batch, batch_format="numpy", batch_size=16, num_cpus=0.5
    )
    frame = pd.concat([b for b in rows.iter_batches(batch_size=None, batch_format="pandas")]).set_index("scan_id")
    return np.stack(frame.loc[scan_ids, "fc"].to_numpy()).astype(np.float32)


def scan_windows(
    uri: str, bundle: EncoderBundle, scan_ids: list[str], target_tr: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fine-tuning inputs: every scan's tiling windows, robust-scaled, and the scan index of each window."""
    position = {s: i for i, s in enumerate(scan_ids)}
    windows, index = [], []
    for batch in shard_dataset(uri, ["scan_id", "tr", "n_rois", "series"]).iter_batches(
        batch_size=None, batch_format="numpy"
    ):
        for sid, tr, r, s in zip(batch["scan_id"], batch["tr"], batch["n_rois"], batch["series"]):
            if str(sid) not in position:
                continue
            w = tiling_windows(
                np.asarray(s, np.float32).reshape(int(r), -1), float(tr), target_tr, bundle.config.frames
            )
            windows.append(np.stack([bundle.stats.scale(x) for x in w]))
            index.append(np.full(len(w), position[str(sid)]))
    return np.concatenate(windows).astype(np.float32), np.concatenate(index)


def labelled(emb: Embeddings, target: str, task: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(kept scan mask, targets of kept scans, task) with missing targets dropped."""
    values = emb.phenotypes[target]
    keep = values.notna().to_numpy() & (values.astype(str).str.strip() != "").to_numpy()
    task = infer_task(values[keep]) if task == "auto" else task
    y = values[keep].to_numpy()
    return keep, (y.astype(float) if task == "regression" else y.astype(str)), task


def run_evaluation(cfg: EvaluateConfig, bundle: EncoderBundle) -> Evaluation:
    """Embed, probe (or fine-tune) and compare; write the table, JSON and plot into ``cfg.out``."""
    from brainjepa_platform.plots import plot_evaluation

    if not cfg.data or not cfg.target:
        raise ValueError("evaluate needs a dataset (--data URI) and a target phenotype column (--target)")
    columns = sorted(read_manifest(cfg.data).phenotypes)
    if cfg.target not in columns:
        raise ValueError(
            f"target {cfg.target!r} is not a phenotype column of {cfg.data}; it has "
            f"{columns or 'none (ingest with --phenotypes participants.tsv)'}"
        )
    target_tr = cfg.target_tr or bundle_target_tr(bundle)
    embed = {"target_tr": target_tr, "scaling": cfg.scaling, "workers": cfg.workers}
    model_emb = embed_dataset(bundle, cfg.data, **embed)
    random_emb = embed_dataset(random_encoder_bundle(bundle), cfg.data, **embed)
    keep, y, task = labelled(model_emb, cfg.target, cfg.task)
    scan_ids = [s for s, k in zip(model_emb.scan_ids, keep) if k]
    subjects = [s for s, k in zip(model_emb.subjects, keep) if k]
    split_column = None
    if cfg.split_column:
        split_column = model_emb.phenotypes.loc[keep, cfg.split_column].astype(str).tolist()
    seeds = list(range(cfg.seeds))
    features = {MODEL: model_emb.features[keep], RANDOM: random_emb.features[keep], FC: fc_dataset(cfg.data, scan_ids)}
    comparison = compare_features(features, subjects, y, task, seeds, cfg.fractions, split_column)
    if cfg.mode == "finetune":
        comparison = finetune_comparison(
            cfg, bundle, target_tr, scan_ids, subjects, y, task, seeds, split_column, comparison
        )
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "table": str(out / "table.txt"),
        "results": str(out / "results.json"),
        "plot": str(out / f"evaluation-{cfg.target}.png"),
    }
    Path(files["table"]).write_text(comparison.format_table() + "\n")
    result_json = {
        "config": redact(to_dict(cfg)),
        "target": cfg.target,
        "n_scans": len(scan_ids),
        "dropped_missing_target": int((~keep).sum()),
        "skipped_scans": model_emb.skipped,
        **comparison.to_json(),
    }
    Path(files["results"]).write_text(json.dumps(result_json, indent=2))
    plot_evaluation(comparison.last, task, cfg.target, files["plot"])
    return Evaluation(comparison, cfg.target, len(scan_ids), int((~keep).sum()), files)


def finetune_comparison(
    cfg: EvaluateConfig,
    bundle: EncoderBundle,
    target_tr: float,
    scan_ids: list[str],
    subjects: list[str],
    y: np.ndarray,
    task: str,
    seeds: list[int],
    split_column: list[str] | None,
    linear: ComparisonResult,
) -> ComparisonResult:
    """Fine-tuned model and random encoder next to the linear FC baseline (same splits per seed)."""
    from brainjepa_platform.evaluate.finetune import compare_finetune

    bundle = scaled_for(bundle, read_manifest(cfg.data), cfg.scaling)
    windows, index = scan_windows(cfg.data, bundle, scan_ids, target_tr)
    tuned = compare_finetune(
        {MODEL: bundle, RANDOM: random_encoder_bundle(bundle)},
        windows,
        index,
        subjects,
        y,
        task,
        seeds,
        cfg.fractions,
        cfg.finetune,
        split_column=split_column,
        num_workers=cfg.workers,
    )
    return ComparisonResult(task, seeds, linear.fractions, {**tuned.results, FC: linear.results[FC]})


def log_evaluation(evaluation: Evaluation, cfg: EvaluateConfig, tracking_uri: str) -> str:
    """One MLflow run in ``tracking_uri``: params, mean/std metric per feature set, the table, JSON and plot as
    artifacts (MLflow's process-wide tracking URI is left as it was)."""
    return log_summary_run(
        to_dict(cfg),
        cfg.experiment,
        f"evaluate-{cfg.target}-{cfg.mode}",
        evaluation.comparison.summary(),
        evaluation.files,
        tracking_uri,
    )


def log_summary_run(
    params: dict[str, Any],
    experiment: str,
    run_name: str,
    summary: dict[str, dict[str, tuple[float, float]]],
    files: dict[str, str],
    tracking_uri: str,
) -> str:
    """One MLflow run: ``params``, ``<features>.<metric>.mean`` / ``.std`` of ``summary`` (finite ones) and
    ``files`` as artifacts under ``evaluation/``; returns the run id."""
    import mlflow

    from brainjepa_platform.tracking.params import log_params
    from brainjepa_platform.tracking.store import ensure_experiment
    from brainjepa_platform.tracking.uri import using_tracking_uri

    experiment_id = ensure_experiment(experiment, tracking_uri)
    with using_tracking_uri(tracking_uri), mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        log_params(params)
        metrics = {}
        for name, per_metric in summary.items():
            for metric, (mean, std) in per_metric.items():
                metrics[f"{name}.{metric}.mean"], metrics[f"{name}.{metric}.std"] = mean, std
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        for path in files.values():
            mlflow.log_artifact(path, artifact_path="evaluation")
        return run.info.run_id
