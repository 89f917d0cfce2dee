"""One trial of a sweep: its PretrainConfig, a Ray Train run with Tune reports, the objective of its final
encoder (a linear probe of a phenotype or subject fingerprinting), and its child MLflow run (through an
explicit ``MlflowClient``)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.tune.integration.ray_train import TuneReportCallback

from brainjepa_platform.data.manifest import Manifest
from brainjepa_platform.sweep.config import ObjectiveConfig, pretrain_from, tune_value
from brainjepa_platform.sweep.search import OBJECTIVE
from brainjepa_platform.tracking.pretraining import prepare_run
from brainjepa_platform.train.checkpoints import read_local_checkpoint
from brainjepa_platform.train.config import PretrainConfig
from brainjepa_platform.train.trainer import make_trainer

if TYPE_CHECKING:
    from brainjepa_platform.evaluate.embed import Embeddings

SWEEP_TAG, TRIAL_TAG, PARENT_TAG = "brainjepa.sweep", "brainjepa.trial_id", "mlflow.parentRunId"


@dataclass
class TrialContext:
    """What every trial needs besides its parameters (sent once through the object store)."""

    sweep: str
    pretrain: dict[str, Any]
    """Base PretrainConfig mapping with absolute URIs, the ROI count and the shared gradients filled in."""
    train_root: str
    """Storage of the trials' Ray Train runs (``<sweep>/trials``)."""
    tracking_uri: str
    parent_run_id: str
    objective: ObjectiveConfig


class TrialReports(TuneReportCallback):
    """``TuneReportCallback`` (each Ray Train report -> a Tune result) adding fixed fields to every report:
    the trial's MLflow run id and a NaN objective until the final one (Tune requires the metric in every
    result)."""

    def __init__(self, extra: dict[str, Any]) -> None:
        super().__init__()
        self.extra = dict(extra)

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        super().after_report(run_context, [{**self.extra, **metrics[0]}, *metrics[1:]], checkpoint)

    def wait_until_delivered(self, timeout_s: float = 300.0, grace_s: float = 1.0) -> None:
        """Block until Tune has taken the last train report off the queue: a ``tune.report`` from the trial
        while one is still queued can deadlock the trial's session (both go through one result slot)."""
        queue = self._training_actor_item_queue  # set by TuneReportCallback.__init__ (ray.util.queue.Queue)
        deadline = time.monotonic() + timeout_s
        while not queue.empty() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(grace_s)  # the session records the item it just took before it takes the next result


def trial_config(context: TrialContext, params: dict[str, Any], trial_id: str) -> PretrainConfig:
    """The trial's resolved PretrainConfig: the base with the trial's values, its own run name and storage."""
    cfg = pretrain_from(context.pretrain, params)
    cfg.train.name = f"{context.sweep}-{trial_id}"
    cfg.train.storage_path = context.train_root
    return cfg


def tag_child_run(context: TrialContext, run_id: str, trial_id: str, params: dict[str, Any]) -> None:
    """Nest the trial's run under the sweep's parent run; log the swept values as ``sweep.<key>`` params."""
    from mlflow.entities import Param, RunTag
    from mlflow.tracking import MlflowClient

    from brainjepa_platform.tracking.params import flatten_params

    tags = {PARENT_TAG: context.parent_run_id, SWEEP_TAG: context.sweep, TRIAL_TAG: trial_id}
    params_logged = flatten_params({"sweep": {k: tune_value(v) for k, v in params.items()}})
    MlflowClient(context.tracking_uri).log_batch(
        run_id, params=[Param(k, v) for k, v in params_logged.items()], tags=[RunTag(k, v) for k, v in tags.items()]
    )


def fit_trial(cfg: PretrainConfig, context: TrialContext, params: dict[str, Any], trial_id: str) -> dict[str, Any]:
    """Train the trial (resuming its Ray Train run when it exists) and score it; returns the final report."""
    run = prepare_run(cfg, context.tracking_uri)
    tag_child_run(context, run.run_id, trial_id, params)
    reports = TrialReports({"mlflow_run_id": run.run_id, OBJECTIVE: math.nan})
    trainer = make_trainer(cfg, run.datasets, run.loop_config, callbacks=[reports])
    result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        state = read_local_checkpoint(Path(d))
    scores = trial_objective(cfg, context.objective, state, run.gradients, run.manifest)
    final = {k: result.metrics[k] for k in ("step", "loss", "val_loss") if k in result.metrics}
    final.update(
        scores,
        **run_monitors(context.tracking_uri, run.run_id),
        mlflow_run_id=run.run_id,
        checkpoint_path=result.checkpoint.path,
    )
    log_trial_scores(context.tracking_uri, run.run_id, scores, int(final.get("step", cfg.train.steps)))
    reports.wait_until_delivered()
    return final


def sweep_trial(params: dict[str, Any], context: TrialContext) -> None:
    """The Tune function trainable: one pretraining run of the trial's settings, then its objective."""
    import ray.tune

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = trial_config(context, params, trial_id)
    ray.tune.report(fit_trial(cfg, context, params, trial_id))


def trial_objective(
    cfg: PretrainConfig,
    objective: ObjectiveConfig,
    state: dict[str, Any],
    gradients: np.ndarray | None,
    manifest: Manifest,
) -> dict[str, Any]:
    """The frozen target encoder's scan embeddings scored by ``objective.kind`` (a linear probe or subject
    fingerprinting): validation metrics (the objective), test metrics (for information, never used to
    choose) and collapse monitors of the features."""
    from brainjepa_platform.evaluate.embed import bundle_from_engine_state, embed_dataset

    bundle = bundle_from_engine_state(state, cfg.model, gradients, manifest)
    emb = embed_dataset(
        bundle,
        cfg.data.dataset,
        target_tr=cfg.data.target_tr,
        batch_size=objective.batch_size,
        token_fc=objective.features == "token_fc",
    )
    if objective.kind == "fingerprint":
        return fingerprint_scores(emb, objective, cfg.data.dataset)
    return probe_scores(emb, objective)


def feature_monitors(x: np.ndarray) -> dict[str, float]:
    """Collapse monitors of scan features: ``feature_std`` and ``feature_rank`` (effective rank)."""
    import torch

    from brainjepa.monitors import collapse_monitors

    features = collapse_monitors(torch.from_numpy(np.asarray(x, dtype=np.float32)))
    return {"feature_std": features["std"], "feature_rank": features["rank"]}


def probe_scores(emb: Embeddings, objective: ObjectiveConfig) -> dict[str, Any]:
    """Linear probe of ``objective.target`` on a subject split: the regulariser chosen and the objective scored
    on validation; test metrics with the regulariser chosen on validation too."""
    from brainjepa_platform.evaluate.probe import linear_probe
    from brainjepa_platform.evaluate.run import labelled
    from brainjepa_platform.evaluate.splits import SplitIndices, subject_split

    keep, y, task = labelled(emb, objective.target, objective.task)
    x = emb.features[keep]
    subjects = [s for s, k in zip(emb.subjects, keep) if k]
    split = subject_split(subjects, objective.seed, objective.fractions, labels=y if task == "classification" else None)
    on_val = SplitIndices(split.train, split.val, split.val)  # pick the regulariser and score on validation
    val = linear_probe(x, y, task, on_val, objective.seed).metrics
    if objective.metric not in val:
        raise ValueError(f"objective.metric={objective.metric!r} is not a {task} metric; choose one of {sorted(val)}")
    test = linear_probe(x, y, task, split, objective.seed).metrics
    return {
        OBJECTIVE: float(val[objective.metric]),
        **{f"val_{k}": float(v) for k, v in val.items()},
        **{f"test_{k}": float(v) for k, v in test.items()},
        **feature_monitors(x),
        "probe_scans": int(x.shape[0]),
        "probe_task": task,
    }


def fingerprint_features(emb: Embeddings, objective: ObjectiveConfig, train_rows: np.ndarray) -> np.ndarray:
    """The features ``objective`` fingerprints by: pooled embeddings or token-FC, minus the mean of the
    ``train_rows`` scans with ``centring: train`` (``ObjectiveConfig`` checks both values)."""
    from brainjepa_platform.evaluate.fingerprint import centred_on

    x = emb.require_token_fc("objective.features=token_fc") if objective.features == "token_fc" else emb.features
    return centred_on(x, train_rows) if objective.centring == "train" else x


def fingerprint_scores(emb: Embeddings, objective: ObjectiveConfig, dataset: str) -> dict[str, Any]:
    """Subject fingerprinting of the validation subjects of a subject split (the objective), and of the test
    subjects (for information), by ``objective.features`` (centred on the train subjects' mean with
    ``objective.centring: train``); subjects with scans from fewer than two sessions are left out."""
    from brainjepa_platform.evaluate.fingerprint import fingerprint_metrics
    from brainjepa_platform.evaluate.splits import subject_split

    if len(emb.sessions) != len(emb.subjects):
        raise ValueError(f"embeddings of {dataset} carry no session labels: embed it with embed_dataset")
    split = subject_split(emb.subjects, objective.seed, objective.fractions)
    x = fingerprint_features(emb, objective, split.train)
    val, test = fingerprint_metrics(emb, x, split.val), fingerprint_metrics(emb, x, split.test)
    if val["subjects"] < 2:
        n_val = len({emb.subjects[r] for r in split.val.tolist()})
        raise ValueError(
            f"objective.kind=fingerprint: {int(val['subjects'])} of the {n_val} validation subjects of dataset "
            f"{dataset} have scans from 2+ sessions, 2 are needed; write a cohort with several sessions per "
            "subject (brainjepa synth --scans-per-subject 2) or give validation more subjects (objective.fractions)"
        )
    return {
        OBJECTIVE: float(val[objective.metric]),
        **{f"val_{k}": v for k, v in val.items()},
        **{f"test_{k}": v for k, v in test.items()},
        **feature_monitors(emb.features),
        "probe_scans": len(emb.scan_ids),
        "probe_task": "fingerprint",
    }


def run_monitors(tracking_uri: str, run_id: str) -> dict[str, float]:
    """The train loop's last collapse monitors of the target encoder (logged to the trial's MLflow run)."""
    from mlflow.tracking import MlflowClient

    logged = MlflowClient(tracking_uri).get_run(run_id).data.metrics
    return {k: float(logged[k]) for k in ("target_std", "target_rank") if k in logged}


def log_trial_scores(tracking_uri: str, run_id: str, scores: dict[str, Any], step: int) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    batch = [
        Metric(k, float(v), now, step)
        for k, v in scores.items()
        if isinstance(v, (int, float)) and math.isfinite(float(v))
    ]
    MlflowClient(tracking_uri).log_batch(run_id, metrics=batch)
