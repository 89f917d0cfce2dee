"""``brainjepa sweep``: Ray Tune over pretraining settings, each trial a Ray Train run, tracked in MLflow.

The driver resolves the base config and the dataset, computes the brain gradients once for every
trial (``<sweep>/gradients.npz``), opens (or, on a rerun, reuses) the sweep's MLflow parent run and
runs a ``Tuner`` whose function trainable, per trial, builds a ``TorchTrainer`` over the streaming
datasets with a ``TuneReportCallback`` (train reports -> Tune results, for ASHA), fits it, then
scores the frozen target encoder of the final checkpoint with a linear probe on a phenotype
(validation part of a subject split) and reports that objective to Tune. Each trial has a child
MLflow run (tag ``mlflow.parentRunId``). At the end the results table and a plot of the objective
against every swept key are written and logged, the best trial's config is written as
``best_config.yaml`` and its encoder registered under the alias ``best_alias``.

Rerunning the same sweep (same ``name`` and ``storage_path``) restores it with ``Tuner.restore``:
finished trials are kept, unfinished ones continue from their last Ray Train checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import io
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.integration.ray_train import TuneReportCallback

from brainjepa.config import ConfigError, to_dict
from brainjepa_platform.storage import (
    Location,
    ensure_bucket,
    exists,
    read_json,
    resolve,
    run_filesystem,
    write_bytes,
    write_json,
)
from brainjepa_platform.sweep.config import (
    ObjectiveConfig,
    ParamSpec,
    SweepConfig,
    flatten,
    pretrain_from,
    set_dotted,
    tune_value,
)
from brainjepa_platform.tracking.pretraining import prepare_run, register_encoder
from brainjepa_platform.train.checkpoints import read_local_checkpoint, run_location
from brainjepa_platform.train.config import PretrainConfig
from brainjepa_platform.train.trainer import RESUMABLE_CHANGES, make_trainer, resolve_gradients

OBJECTIVE = "objective"
STATE_FILE = "sweep.json"
BEST_CONFIG = "best_config.yaml"
TRAIN_DIR = "trials"
SWEEP_TAG, TRIAL_TAG, PARENT_TAG = "brainjepa.sweep", "brainjepa.trial_id", "mlflow.parentRunId"
# settings that may change when a sweep is resumed; everything else must not
SWEEP_RESUMABLE = ("verbose", "register_best", "best_alias", *(f"pretrain.{k}" for k in RESUMABLE_CHANGES))


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


@dataclass
class TrialRow:
    """One trial in the results table."""

    trial_id: str
    params: dict[str, Any]
    objective: float
    val_loss: float
    status: str
    """done, stopped (early, by the scheduler, or with a non-finite objective) or error."""
    run_id: str = ""
    checkpoint: str = ""


@dataclass
class SweepResult:
    name: str
    path: str
    parent_run_id: str
    completed: bool
    """False when the sweep was interrupted: rerun the same command to resume it."""
    trials: list[TrialRow]
    best: TrialRow | None = None
    model_version: str | None = None
    table: str = ""
    files: dict[str, str] = field(default_factory=dict)


# --- search space, algorithm, scheduler --------------------------------------------------------------
def domain(kind: str, spec: ParamSpec) -> Any:
    """A Tune search domain for one key."""
    from ray import tune

    if spec.values is not None:
        values = [tune_value(v) for v in spec.values]
        return tune.grid_search(values) if kind == "grid" else tune.choice(values)
    if spec.integer:
        low, high = int(spec.low), int(spec.high) + 1  # Tune's integer upper bounds are exclusive
        return tune.lograndint(low, high) if spec.log else tune.randint(low, high)
    return tune.loguniform(spec.low, spec.high) if spec.log else tune.uniform(spec.low, spec.high)


def search_space(cfg: SweepConfig) -> dict[str, Any]:
    return {key: domain(cfg.search, spec) for key, spec in cfg.space.items()}


def search_algorithm(cfg: SweepConfig) -> Any:
    """Tune's variant generator (grid and random search), or Optuna (TPE) for ``search=bayes``."""
    if cfg.search == "bayes":
        if importlib.util.find_spec("optuna") is None:
            raise ValueError("search=bayes uses Tune's Optuna integration, but optuna is not installed: "
                             "pip install optuna, or use search=random")
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=OBJECTIVE, mode=cfg.objective.mode, seed=cfg.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=cfg.seed, max_concurrent=cfg.max_concurrent_trials)


def make_scheduler(cfg: SweepConfig, base: PretrainConfig) -> Any:
    """ASHA on a metric of the train reports (one per checkpoint; ``time_attr`` = optimizer step), or None.

    Its rungs end at the last checkpoint before the final step and ``stop_last_trials`` is off, so a
    trial that trains to the end is never stopped at its last report, before its objective is scored.
    """
    if cfg.scheduler.kind == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    s, every = cfg.scheduler, base.train.checkpoint_every
    grace, last_rung = s.grace_period or every, base.train.steps - every
    if grace > last_rung:
        raise ValueError(f"scheduler.grace_period={grace} leaves ASHA no checkpoint to stop at before the end: it "
                         f"must be <= train.steps - train.checkpoint_every = {last_rung} (or use scheduler.kind=fifo)")
    return ASHAScheduler(time_attr="step", metric=s.metric, mode=s.mode, max_t=last_rung, grace_period=grace,
                         reduction_factor=s.reduction_factor, stop_last_trials=False)


# --- one trial ------------------------------------------------------------------------------------------
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

    from brainjepa_platform.tracking.registry import flatten_params

    tags = {PARENT_TAG: context.parent_run_id, SWEEP_TAG: context.sweep, TRIAL_TAG: trial_id}
    params_logged = flatten_params({"sweep": {k: tune_value(v) for k, v in params.items()}})
    MlflowClient(context.tracking_uri).log_batch(run_id, params=[Param(k, v) for k, v in params_logged.items()],
                                                 tags=[RunTag(k, v) for k, v in tags.items()])


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
    final.update(scores, **run_monitors(context.tracking_uri, run.run_id), mlflow_run_id=run.run_id,
                 checkpoint_path=result.checkpoint.path)
    log_trial_scores(context.tracking_uri, run.run_id, scores, int(final.get("step", cfg.train.steps)))
    reports.wait_until_delivered()
    return final


def sweep_trial(params: dict[str, Any], context: TrialContext) -> None:
    """The Tune function trainable: one pretraining run of the trial's settings, then its objective."""
    import ray.tune

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = trial_config(context, params, trial_id)
    ray.tune.report(fit_trial(cfg, context, params, trial_id))


def trial_objective(cfg: PretrainConfig, objective: ObjectiveConfig, state: dict[str, Any],
                    gradients: np.ndarray | None, manifest: dict[str, Any]) -> dict[str, Any]:
    """Linear probe of the frozen target encoder's scan embeddings: validation metrics (the objective),
    test metrics (for information, never used to choose) and collapse monitors of the features."""
    import torch

    from brainjepa.monitors import collapse_monitors
    from brainjepa_platform.evaluate.embed import bundle_from_engine_state, embed_dataset
    from brainjepa_platform.evaluate.probe import SplitIndices, linear_probe, subject_split
    from brainjepa_platform.evaluate.run import labelled

    bundle = bundle_from_engine_state(state, cfg.model, gradients, manifest)
    emb = embed_dataset(bundle, cfg.data.dataset, target_tr=cfg.data.target_tr, batch_size=objective.batch_size)
    keep, y, task = labelled(emb, objective.target, objective.task)
    x = emb.features[keep]
    subjects = [s for s, k in zip(emb.subjects, keep) if k]
    split = subject_split(subjects, objective.seed, objective.fractions,
                          labels=y if task == "classification" else None)
    on_val = SplitIndices(split.train, split.val, split.val)  # pick the regulariser and score on validation
    val = linear_probe(x, y, task, on_val, objective.seed).metrics
    if objective.metric not in val:
        raise ValueError(f"objective.metric={objective.metric!r} is not a {task} metric; choose one of {sorted(val)}")
    test = linear_probe(x, y, task, split, objective.seed).metrics
    features = collapse_monitors(torch.from_numpy(np.asarray(x, dtype=np.float32)))
    return {OBJECTIVE: float(val[objective.metric]), **{f"val_{k}": float(v) for k, v in val.items()},
            **{f"test_{k}": float(v) for k, v in test.items()}, "feature_std": features["std"],
            "feature_rank": features["rank"], "probe_scans": int(x.shape[0]), "probe_task": task}


def run_monitors(tracking_uri: str, run_id: str) -> dict[str, float]:
    """The train loop's last collapse monitors of the target encoder (logged to the trial's MLflow run)."""
    from mlflow.tracking import MlflowClient

    logged = MlflowClient(tracking_uri).get_run(run_id).data.metrics
    return {k: float(logged[k]) for k in ("target_std", "target_rank") if k in logged}


def log_trial_scores(tracking_uri: str, run_id: str, scores: dict[str, Any], step: int) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in scores.items()
             if isinstance(v, (int, float)) and math.isfinite(float(v))]
    MlflowClient(tracking_uri).log_batch(run_id, metrics=batch)


# --- the driver -----------------------------------------------------------------------------------------
def resolved_sweep(cfg: SweepConfig) -> dict[str, Any]:
    """The sweep config as saved: the base pretraining config resolved."""
    return {**to_dict(cfg), "pretrain": to_dict(cfg.base_pretrain())}


def check_same_sweep(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Refuse to resume a sweep whose settings changed (other than scale, tracking and reporting)."""
    a, b = flatten(saved), flatten(current)
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(SWEEP_RESUMABLE))
    if changed:
        details = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in changed[:8])
        raise ValueError(f"{where} holds a sweep started with other settings ({details}); resume it with the same "
                         "config, or choose a new name")


def sweep_gradients(cfg: SweepConfig, base: PretrainConfig, manifest: dict[str, Any], sweep_dir: Location) -> str:
    """URI of the gradients every trial uses: the base config's, or computed once for the sweep with as
    many components as the largest swept ``model.n_gradients`` ("" when no trial uses gradients)."""
    if base.gradients:
        return resolve(base.gradients).uri
    if not uses_gradients(cfg, base):
        return ""
    n = max(gradient_counts(cfg, base))
    widest = dataclasses.replace(base, model=dataclasses.replace(base.model, positional="gradient", n_gradients=n))
    resolve_gradients(widest, manifest, sweep_dir)
    return sweep_dir.child("gradients.npz").uri


def _candidates(cfg: SweepConfig, key: str) -> list[Any]:
    return cfg.space[key].candidates() if key in cfg.space else []


def uses_gradients(cfg: SweepConfig, base: PretrainConfig) -> bool:
    """Whether any trial uses the Brain Gradient Positional embedding."""
    return "gradient" in {base.model.positional, *_candidates(cfg, "model.positional")}


def gradient_counts(cfg: SweepConfig, base: PretrainConfig) -> list[int]:
    """The trials' ``model.n_gradients``: the swept values, else the base config's."""
    return [int(float(v)) for v in _candidates(cfg, "model.n_gradients") or [base.model.n_gradients]]


def check_fits_dataset(cfg: SweepConfig, base: PretrainConfig, manifest: dict[str, Any]) -> None:
    """Refuse, before any Ray work, trials that cannot run on the dataset: gradients computed for the
    sweep from R ROIs give at most R-1 components."""
    n_rois = int(manifest["atlas"]["n_rois"])
    if base.gradients or not uses_gradients(cfg, base):
        return  # a given artifact is checked against the dataset's ROIs when it is read
    too_many = sorted({n for n in gradient_counts(cfg, base) if n >= n_rois})
    if too_many:
        key = "space.model.n_gradients" if "model.n_gradients" in cfg.space else "model.n_gradients"
        raise ConfigError(f"{key}: {too_many} gradients do not fit dataset {base.data.dataset}, whose {n_rois} "
                          f"ROIs give at most {n_rois - 1}; sweep fewer (or use an atlas with more ROIs)")


def open_parent_run(cfg: SweepConfig, resolved: dict[str, Any], tracking_uri: str, experiment: str,
                    sweep_dir: Location) -> dict[str, Any]:
    """The sweep's state (parent run id, config, best trial): reused on a rerun, else created with the
    MLflow parent run (params: the flattened sweep config; artifact: the resolved config)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from brainjepa_platform.tracking import registry as tracking
    state_loc = sweep_dir.child(STATE_FILE)
    if exists(state_loc):
        state = read_json(state_loc)
        check_same_sweep(state["config"], resolved, sweep_dir.uri)
    else:
        mlflow.set_tracking_uri(tracking_uri)
        experiment_id = tracking.ensure_experiment(experiment, tracking_uri)
        with mlflow.start_run(experiment_id=experiment_id, run_name=cfg.name, tags={SWEEP_TAG: cfg.name}) as run:
            tracking.log_params(resolved)
            tracking.log_run_artifacts(config=resolved, artifact_path="sweep")
        state = {"parent_run_id": run.info.run_id, "config": resolved}
        write_json(state_loc, state)
    MlflowClient(tracking_uri).update_run(state["parent_run_id"], status="RUNNING")
    return state


def prepare_sweep(cfg: SweepConfig) -> tuple[TrialContext, Location, dict[str, Any]]:
    """Resolve the dataset, gradients and tracking of the sweep; returns the trials' context, the sweep's
    folder and its saved state."""
    from brainjepa_platform.cluster.connect import init_ray
    from brainjepa_platform.data.ingestion import read_manifest
    from brainjepa_platform.tracking import registry as tracking

    base = cfg.base_pretrain()
    if not base.data.dataset:
        raise ValueError("data.dataset is empty: pass data.dataset=URI of an ingested dataset")
    dataset = resolve(base.data.dataset).uri
    manifest = read_manifest(dataset)
    check_fits_dataset(cfg, base, manifest)
    tracking_uri = tracking.check_tracking_uri(base.tracking.tracking_uri or None)
    init_ray()
    root = resolve(cfg.storage_path)
    ensure_bucket(root)
    sweep_dir = root.child(cfg.name)
    pretrain = copy.deepcopy(cfg.pretrain)
    fixed = {"data.dataset": dataset, "tracking.tracking_uri": tracking_uri, "tracking.register": False}
    if not base.model.n_rois:
        fixed["model.n_rois"] = manifest["atlas"]["n_rois"]
    for key, value in fixed.items():
        set_dotted(pretrain, key, value)
    state = open_parent_run(cfg, resolved_sweep(cfg), tracking_uri, base.tracking.experiment, sweep_dir)
    base = pretrain_from(pretrain, {})
    grads = sweep_gradients(cfg, base, manifest, sweep_dir)
    if grads:
        set_dotted(pretrain, "gradients", grads)
    context = TrialContext(sweep=cfg.name, pretrain=pretrain, train_root=sweep_dir.child(TRAIN_DIR).uri,
                           tracking_uri=tracking_uri, parent_run_id=state["parent_run_id"], objective=cfg.objective)
    return context, sweep_dir, state


def make_tuner(cfg: SweepConfig, context: TrialContext, sweep_dir: Location, search: Any, scheduler: Any,
               callbacks: list[Any] | None) -> Any:
    """A new Tuner, or the interrupted one restored from ``<storage_path>/<name>`` (finished trials kept,
    unfinished and errored ones resumed; the searcher's state is restored, the scheduler starts afresh)."""
    from ray import tune

    trainable = tune.with_resources(tune.with_parameters(sweep_trial, context=context), dict(cfg.trial_resources))
    if tune.Tuner.can_restore(sweep_dir.path, storage_filesystem=run_filesystem(sweep_dir)):
        return tune.Tuner.restore(sweep_dir.path, trainable, resume_unfinished=True, resume_errored=True,
                                  storage_filesystem=run_filesystem(sweep_dir))
    tune_config = tune.TuneConfig(
        metric=None if scheduler else OBJECTIVE, mode=None if scheduler else cfg.objective.mode,
        search_alg=search, scheduler=scheduler, num_samples=cfg.num_samples,
        # the variant generator limits itself; other searchers are wrapped in a ConcurrencyLimiter
        max_concurrent_trials=None if cfg.search != "bayes" else cfg.max_concurrent_trials or None,
    )
    root = resolve(cfg.storage_path)
    run_config = tune.RunConfig(name=cfg.name, storage_path=root.path, storage_filesystem=run_filesystem(root),
                                callbacks=callbacks, verbose=cfg.verbose,
                                failure_config=tune.FailureConfig(max_failures=0))
    return tune.Tuner(trainable, param_space=search_space(cfg), tune_config=tune_config, run_config=run_config)


def collect_rows(grid: Any, keys: list[str]) -> list[TrialRow]:
    """Trials of a ResultGrid, in trial order."""
    rows = []
    for result in grid:
        m = result.metrics or {}
        objective = float(m.get(OBJECTIVE, math.nan))
        status = "error" if result.error else ("done" if math.isfinite(objective) else "stopped")
        rows.append(TrialRow(trial_id=str(m.get("trial_id") or Path(result.path).name),
                             params={k: result.config.get(k) for k in keys}, objective=objective,
                             val_loss=float(m.get("val_loss", math.nan)), status=status,
                             run_id=str(m.get("mlflow_run_id", "")), checkpoint=str(m.get("checkpoint_path", ""))))
    return sorted(rows, key=lambda r: r.trial_id)


def pick_best(rows: list[TrialRow], mode: str) -> TrialRow | None:
    done = [r for r in rows if r.status == "done"]
    if not done:
        return None
    return max(done, key=lambda r: r.objective if mode == "max" else -r.objective)


def objective_label(objective: ObjectiveConfig) -> str:
    return f"val {objective.metric} ({objective.target})"


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_table(rows: list[TrialRow], keys: list[str], label: str, best: TrialRow | None = None) -> str:
    """Aligned text table: trial, swept values, objective, validation loss, status (best marked *)."""
    header = ["trial", *keys, label, "val_loss", "status"]
    body = [[("* " if best is not None and r.trial_id == best.trial_id else "  ") + r.trial_id,
             *(_cell(r.params.get(k)) for k in keys), f"{r.objective:.4f}", f"{r.val_loss:.4f}", r.status]
            for r in rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *body]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def rows_csv(rows: list[TrialRow], keys: list[str]) -> str:
    import pandas as pd

    frame = pd.DataFrame([{"trial": r.trial_id, **{k: r.params.get(k) for k in keys}, OBJECTIVE: r.objective,
                           "val_loss": r.val_loss, "status": r.status, "mlflow_run_id": r.run_id} for r in rows])
    return frame.to_csv(index=False)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def plot_objective(rows: list[TrialRow], space: dict[str, ParamSpec], label: str, path: str | Path,
                   best: TrialRow | None = None) -> Path:
    """The objective of every scored trial against each swept key (categorical keys as labelled positions)."""
    from matplotlib.ticker import NullFormatter

    from brainjepa_platform.plots import _save, plt

    keys = list(space)
    scored = [r for r in rows if math.isfinite(r.objective)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = [r.params.get(key) for r in scored]
        if all(_is_number(v) for v in values):
            xs = [float(v) for v in values]
            if space[key].log and xs:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
                ticks = sorted({min(xs), max(xs)})
                ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks], fontsize=8)
        else:
            labels = list(dict.fromkeys(str(v) for v in values))
            xs = [float(labels.index(str(v))) for v in values]
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.scatter(xs, [r.objective for r in scored], color="#4c72b0", s=28)
        if best is not None and best in scored:
            i = scored.index(best)
            ax.scatter([xs[i]], [best.objective], marker="*", s=160, color="#c44e52", label="best", zorder=3)
            ax.legend(fontsize=8)
        ax.set_xlabel(key)
        ax.set_ylabel(label)
    fig.suptitle(f"{label} per trial ({len(scored)} scored of {len(rows)})")
    fig.tight_layout()
    return _save(fig, path)


def best_config_text(cfg: SweepConfig, best: TrialRow, best_cfg: PretrainConfig) -> str:
    """The best trial's config as YAML, ready for ``brainjepa pretrain --config`` (run name, storage and
    registration as in the sweep's base config)."""
    from brainjepa_platform.tracking.registry import write_config

    base = cfg.base_pretrain()
    ready = copy.deepcopy(best_cfg)
    ready.train.name, ready.train.storage_path = f"{cfg.name}-best", base.train.storage_path
    ready.tracking.register, ready.tracking.tracking_uri = base.tracking.register, base.tracking.tracking_uri
    with tempfile.TemporaryDirectory() as tmp:
        body = write_config(ready, Path(tmp) / BEST_CONFIG).read_text()
    swept = ", ".join(f"{k}={v}" for k, v in best.params.items())
    return (f"# best trial {best.trial_id} of sweep {cfg.name}: {objective_label(cfg.objective)} = "
            f"{best.objective:.4f} (MLflow run {best.run_id})\n# swept: {swept}\n{body}")


def register_best(cfg: SweepConfig, best: TrialRow, best_cfg: PretrainConfig, tracking_uri: str) -> str:
    """Register the best trial's target encoder (final checkpoint) under ``best_alias``."""
    import ray.train

    from brainjepa_platform.data.ingestion import read_manifest

    manifest = read_manifest(best_cfg.data.dataset)
    artifact = resolve_gradients(best_cfg, manifest, run_location(best_cfg.train.storage_path, best_cfg.train.name))
    checkpoint = ray.train.Checkpoint(best.checkpoint, filesystem=resolve(best_cfg.train.storage_path).fs)
    registering = copy.deepcopy(best_cfg)
    registering.tracking.alias = cfg.best_alias
    return register_encoder(registering, tracking_uri, best.run_id, checkpoint, manifest, artifact)


def write_results(cfg: SweepConfig, rows: list[TrialRow], best: TrialRow | None, best_text: str | None,
                  sweep_dir: Location, parent_run_id: str, tracking_uri: str) -> tuple[str, dict[str, str]]:
    """Table (txt, csv), plot and best config: written to the sweep folder and logged to the parent run."""
    import mlflow

    keys, label = list(cfg.space), objective_label(cfg.objective)
    table = format_table(rows, keys, label, best)
    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="brainjepa-sweep-") as tmp:
        local = {"results.txt": table + "\n", "results.csv": rows_csv(rows, keys)}
        if best_text is not None:
            local[BEST_CONFIG] = best_text
        for name, text in local.items():
            (Path(tmp) / name).write_text(text)
        plot_objective(rows, cfg.space, label, Path(tmp) / "objective_vs_params.png", best)
        mlflow.set_tracking_uri(tracking_uri)
        with mlflow.start_run(run_id=parent_run_id):
            for file in sorted(Path(tmp).iterdir()):
                write_bytes(sweep_dir.child(file.name), file.read_bytes())
                mlflow.log_artifact(str(file), artifact_path="sweep")
                files[file.stem] = sweep_dir.child(file.name).uri
    return table, files


def log_sweep_metrics(tracking_uri: str, parent_run_id: str, rows: list[TrialRow], best: TrialRow | None) -> None:
    """Per trial (step = trial index) the objective, and the best trial's objective and ids, on the parent run."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    metrics = [Metric("trial_objective", r.objective, now, i) for i, r in enumerate(rows) if math.isfinite(r.objective)]
    tags = []
    if best is not None:
        metrics.append(Metric("best_objective", best.objective, now, 0))
        tags = [RunTag("brainjepa.best_trial", best.trial_id), RunTag("brainjepa.best_run_id", best.run_id)]
    MlflowClient(tracking_uri).log_batch(parent_run_id, metrics=metrics, tags=tags)


def finish_sweep(cfg: SweepConfig, context: TrialContext, rows: list[TrialRow], sweep_dir: Location,
                 state: dict[str, Any]) -> SweepResult:
    """Best trial, its config and registered encoder, the results table and plot; the parent run ends."""
    from mlflow.tracking import MlflowClient

    best = pick_best(rows, cfg.objective.mode)
    version, best_text = None, None
    if best is not None:
        best_cfg = trial_config(context, best.params, best.trial_id)
        best_text = best_config_text(cfg, best, best_cfg)
        registered = state.get("best") or {}
        version = registered.get("model_version") if registered.get("trial_id") == best.trial_id else None
        if cfg.register_best and version is None:
            version = register_best(cfg, best, best_cfg, context.tracking_uri)
    table, files = write_results(cfg, rows, best, best_text, sweep_dir, context.parent_run_id, context.tracking_uri)
    log_sweep_metrics(context.tracking_uri, context.parent_run_id, rows, best)
    if best is not None:
        write_json(sweep_dir.child(STATE_FILE), {**state, "best": {"trial_id": best.trial_id, "model_version": version,
                                                                   "mlflow_run_id": best.run_id,
                                                                   OBJECTIVE: best.objective}})
    MlflowClient(context.tracking_uri).set_terminated(context.parent_run_id, "FINISHED")
    return SweepResult(cfg.name, sweep_dir.uri, context.parent_run_id, True, rows, best, version, table, files)


def run_sweep(cfg: SweepConfig, callbacks: list[Any] | None = None) -> SweepResult:
    """Run (or resume) the sweep; ``callbacks`` are extra Ray Tune callbacks (e.g. a progress hook)."""
    from mlflow.tracking import MlflowClient

    search, scheduler = search_algorithm(cfg), make_scheduler(cfg, cfg.base_pretrain())  # config errors first
    context, sweep_dir, state = prepare_sweep(cfg)
    grid = make_tuner(cfg, context, sweep_dir, search, scheduler, callbacks).fit()
    rows = collect_rows(grid, list(cfg.space))
    ended = grid.num_terminated + grid.num_errors
    if not len(rows) == ended == cfg.expected_trials():  # interrupted: Tune saved its state for a rerun
        MlflowClient(context.tracking_uri).set_terminated(context.parent_run_id, "KILLED")
        for row in rows:
            row.status = "pending" if row.status == "stopped" else row.status
        return SweepResult(cfg.name, sweep_dir.uri, context.parent_run_id, False, rows,
                           table=format_table(rows, list(cfg.space), objective_label(cfg.objective)))
    return finish_sweep(cfg, context, rows, sweep_dir, state)


def describe(result: SweepResult, objective: ObjectiveConfig) -> str:
    """Human summary of a sweep result (the table, the best trial, where things are)."""
    out = io.StringIO()
    done = sum(r.status == "done" for r in result.trials)
    out.write(f"Sweep {result.name}: {len(result.trials)} trials ({done} scored), {result.path}\n")
    out.write(result.table + "\n")
    if not result.completed:
        out.write("The sweep was interrupted; run the same command again to resume it.\n")
        return out.getvalue()
    if result.best is None:
        out.write("No trial produced a finite objective.\n")
    else:
        out.write(f"Best: trial {result.best.trial_id}, {objective_label(objective)} = {result.best.objective:.4f}"
                  f" (MLflow run {result.best.run_id})\n")
    for name, uri in result.files.items():
        out.write(f"  {name}: {uri}\n")
    out.write(f"  MLflow parent run {result.parent_run_id}")
    if result.model_version:
        out.write(f"; best encoder registered as version {result.model_version}")
    return out.getvalue() + "\n"
