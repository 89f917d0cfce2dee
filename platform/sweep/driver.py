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

This module is the driver's side; the search lives in :mod:`.search`, a trial in :mod:`.trial` and
the results table, plot and best config in :mod:`.results`. MLflow is reached through an explicit
``MlflowClient(tracking_uri)``: nothing here changes the process's tracking URI.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from brainjepa.config import ConfigError, to_dict
from brainjepa_platform.data.manifest import Manifest
from brainjepa_platform.storage import (
    Location,
    ensure_bucket,
    exists,
    read_json,
    resolve,
    run_filesystem,
    write_json,
)
from brainjepa_platform.sweep.config import SweepConfig, pretrain_from, set_dotted
from brainjepa_platform.sweep.results import (
    SweepResult,
    TrialRow,
    best_config_text,
    collect_rows,
    format_table,
    log_sweep_metrics,
    objective_label,
    pick_best,
    write_results,
)
from brainjepa_platform.sweep.search import OBJECTIVE, make_scheduler, search_algorithm, search_space
from brainjepa_platform.sweep.trial import SWEEP_TAG, TrialContext, sweep_trial, trial_config
from brainjepa_platform.tracking.pretraining import register_encoder
from brainjepa_platform.train.checkpoints import run_location
from brainjepa_platform.train.config import PretrainConfig
from brainjepa_platform.train.trainer import (
    RESUMABLE_CHANGES,
    changed_settings,
    resolve_gradients,
    with_current_defaults,
)

STATE_FILE = "sweep.json"
TRAIN_DIR = "trials"
# settings that may change when a sweep is resumed; everything else must not
SWEEP_RESUMABLE = ("verbose", "register_best", "best_alias", *(f"pretrain.{k}" for k in RESUMABLE_CHANGES))


def resolved_sweep(cfg: SweepConfig) -> dict[str, Any]:
    """The sweep config as saved: the base pretraining config resolved."""
    return {**to_dict(cfg), "pretrain": to_dict(cfg.base_pretrain())}


def sweep_with_current_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved sweep config (:func:`resolved_sweep`) read as today's configs read it: keys added since it was
    saved take their defaults, in the sweep's settings and in its resolved base pretraining config."""
    normalised = with_current_defaults(SweepConfig, saved)
    if isinstance(saved.get("pretrain"), dict) and normalised is not saved:
        normalised["pretrain"] = with_current_defaults(PretrainConfig, saved["pretrain"])
    return normalised


def check_same_sweep(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Refuse to resume a sweep whose settings changed (other than scale, tracking and reporting); settings
    that the saved config predates count as their defaults."""
    details = changed_settings(
        sweep_with_current_defaults(saved), sweep_with_current_defaults(current), SWEEP_RESUMABLE
    )
    if details:
        raise ValueError(
            f"{where} holds a sweep started with other settings ({details}); resume it with the same "
            "config, or choose a new name"
        )


def sweep_gradients(cfg: SweepConfig, base: PretrainConfig, manifest: Manifest, sweep_dir: Location) -> str:
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


def check_fits_dataset(cfg: SweepConfig, base: PretrainConfig, manifest: Manifest) -> None:
    """Refuse, before any Ray work, trials that cannot run on the dataset: gradients computed for the
    sweep from R ROIs give at most R-1 components."""
    n_rois = manifest.atlas.n_rois
    if base.gradients or not uses_gradients(cfg, base):
        return  # a given artifact is checked against the dataset's ROIs when it is read
    too_many = sorted({n for n in gradient_counts(cfg, base) if n >= n_rois})
    if too_many:
        key = "space.model.n_gradients" if "model.n_gradients" in cfg.space else "model.n_gradients"
        raise ConfigError(
            f"{key}: {too_many} gradients do not fit dataset {base.data.dataset}, whose {n_rois} "
            f"ROIs give at most {n_rois - 1}; sweep fewer (or use an atlas with more ROIs)"
        )


def open_parent_run(
    cfg: SweepConfig, resolved: dict[str, Any], tracking_uri: str, experiment: str, sweep_dir: Location
) -> dict[str, Any]:
    """The sweep's state (parent run id, config, best trial): reused on a rerun, else created with the
    MLflow parent run (params: the flattened sweep config; artifact: the resolved config)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    state_loc = sweep_dir.child(STATE_FILE)
    if exists(state_loc):
        state = read_json(state_loc)
        check_same_sweep(state["config"], resolved, sweep_dir.uri)
    else:
        state = {"parent_run_id": create_parent_run(tracking_uri, cfg.name, resolved, experiment), "config": resolved}
        write_json(state_loc, state)
    client.update_run(state["parent_run_id"], status="RUNNING")
    return state


def create_parent_run(tracking_uri: str, name: str, resolved: dict[str, Any], experiment: str) -> str:
    """A new parent run in ``experiment`` (with MLflow's default user/source tags, as ``mlflow.start_run`` sets
    them), the flattened and redacted sweep config as its params and the config as ``sweep/config.yaml``."""
    import tempfile
    from pathlib import Path

    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient
    from mlflow.tracking.context.registry import resolve_tags

    from brainjepa_platform.tracking.bundle import write_config
    from brainjepa_platform.tracking.params import PARAMS_PER_BATCH, flatten_params
    from brainjepa_platform.tracking.store import ensure_experiment

    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(experiment, tracking_uri)
    run_id = client.create_run(experiment_id, run_name=name, tags=resolve_tags({SWEEP_TAG: name})).info.run_id
    params = [Param(k, v) for k, v in flatten_params(resolved).items()]
    for start in range(0, len(params), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=params[start : start + PARAMS_PER_BATCH])
    with tempfile.TemporaryDirectory(prefix="brainjepa-sweep-") as tmp:
        client.log_artifact(run_id, str(write_config(resolved, Path(tmp) / "config.yaml")), artifact_path="sweep")
    return run_id


def prepare_sweep(cfg: SweepConfig) -> tuple[TrialContext, Location, dict[str, Any]]:
    """Resolve the dataset, gradients and tracking of the sweep; returns the trials' context, the sweep's
    folder and its saved state."""
    from brainjepa_platform.cluster.connect import init_ray
    from brainjepa_platform.data.manifest import read_manifest
    from brainjepa_platform.tracking.store import check_tracking_uri

    base = cfg.base_pretrain()
    if not base.data.dataset:
        raise ValueError("data.dataset is empty: pass data.dataset=URI of an ingested dataset")
    dataset = resolve(base.data.dataset).uri
    manifest = read_manifest(dataset)
    check_fits_dataset(cfg, base, manifest)
    tracking_uri = check_tracking_uri(base.tracking.tracking_uri or None)
    init_ray()
    root = resolve(cfg.storage_path)
    ensure_bucket(root)
    sweep_dir = root.child(cfg.name)
    pretrain = copy.deepcopy(cfg.pretrain)
    fixed = {"data.dataset": dataset, "tracking.tracking_uri": tracking_uri, "tracking.register": False}
    if not base.model.n_rois:
        fixed["model.n_rois"] = manifest.atlas.n_rois
    for key, value in fixed.items():
        set_dotted(pretrain, key, value)
    state = open_parent_run(cfg, resolved_sweep(cfg), tracking_uri, base.tracking.experiment, sweep_dir)
    base = pretrain_from(pretrain, {})
    grads = sweep_gradients(cfg, base, manifest, sweep_dir)
    if grads:
        set_dotted(pretrain, "gradients", grads)
    context = TrialContext(
        sweep=cfg.name,
        pretrain=pretrain,
        train_root=sweep_dir.child(TRAIN_DIR).uri,
        tracking_uri=tracking_uri,
        parent_run_id=state["parent_run_id"],
        objective=cfg.objective,
    )
    return context, sweep_dir, state


def make_tuner(
    cfg: SweepConfig,
    context: TrialContext,
    sweep_dir: Location,
    search: Any,
    scheduler: Any,
    callbacks: list[Any] | None,
) -> Any:
    """A new Tuner, or the interrupted one restored from ``<storage_path>/<name>`` (finished trials kept,
    unfinished and errored ones resumed; the searcher's state is restored, the scheduler starts afresh)."""
    from ray import tune

    trainable = tune.with_resources(tune.with_parameters(sweep_trial, context=context), dict(cfg.trial_resources))
    if tune.Tuner.can_restore(sweep_dir.path, storage_filesystem=run_filesystem(sweep_dir)):
        return tune.Tuner.restore(
            sweep_dir.path,
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=run_filesystem(sweep_dir),
        )
    tune_config = tune.TuneConfig(
        metric=None if scheduler else OBJECTIVE,
        mode=None if scheduler else cfg.objective.mode,
        search_alg=search,
        scheduler=scheduler,
        num_samples=cfg.num_samples,
        # the variant generator limits itself; other searchers are wrapped in a ConcurrencyLimiter
        max_concurrent_trials=None if cfg.search != "bayes" else cfg.max_concurrent_trials or None,
    )
    root = resolve(cfg.storage_path)
    run_config = tune.RunConfig(
        name=cfg.name,
        storage_path=root.path,
        storage_filesystem=run_filesystem(root),
        callbacks=callbacks,
        verbose=cfg.verbose,
        failure_config=tune.FailureConfig(max_failures=0),
    )
    return tune.Tuner(trainable, param_space=search_space(cfg), tune_config=tune_config, run_config=run_config)


def register_best(cfg: SweepConfig, best: TrialRow, best_cfg: PretrainConfig, tracking_uri: str) -> str:
    """Register the best trial's target encoder (final checkpoint) under ``best_alias``."""
    import ray.train

    from brainjepa_platform.data.manifest import read_manifest

    manifest = read_manifest(best_cfg.data.dataset)
    artifact = resolve_gradients(best_cfg, manifest, run_location(best_cfg.train.storage_path, best_cfg.train.name))
    checkpoint = ray.train.Checkpoint(best.checkpoint, filesystem=resolve(best_cfg.train.storage_path).fs)
    registering = copy.deepcopy(best_cfg)
    registering.tracking.alias = cfg.best_alias
    return register_encoder(registering, tracking_uri, best.run_id, checkpoint, manifest, artifact)


def finish_sweep(
    cfg: SweepConfig, context: TrialContext, rows: list[TrialRow], sweep_dir: Location, state: dict[str, Any]
) -> SweepResult:
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
        write_json(
            sweep_dir.child(STATE_FILE),
            {
                **state,
                "best": {
                    "trial_id": best.trial_id,
                    "model_version": version,
                    "mlflow_run_id": best.run_id,
                    OBJECTIVE: best.objective,
                },
            },
        )
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
        return SweepResult(
            cfg.name,
            sweep_dir.uri,
            context.parent_run_id,
            False,
            rows,
            table=format_table(rows, list(cfg.space), objective_label(cfg.objective)),
        )
    return finish_sweep(cfg, context, rows, sweep_dir, state)
