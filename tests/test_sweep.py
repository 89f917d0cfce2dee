"""Ray Tune sweeps on real services: a local Ray cluster, sqlite MLflow, a tiny synthetic cohort."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from ray import tune

from brainjepa.config import ConfigError, load_config
from brainjepa.fingerprint import differential_identifiability, identification_accuracy
from brainjepa.model import BrainEncoder
from brainjepa_platform.cli import main as cli
from brainjepa_platform.data.manifest import read_manifest
from brainjepa_platform.data.synth import SynthOptions, write_parquet
from brainjepa_platform.evaluate.embed import Embeddings, bundle_from_engine_state, embed_dataset
from brainjepa_platform.evaluate.splits import subject_split
from brainjepa_platform.sweep.config import ObjectiveConfig, load_sweep_config
from brainjepa_platform.sweep.driver import run_sweep
from brainjepa_platform.sweep.results import BEST_CONFIG, TrialRow, format_table, objective_label, plot_objective
from brainjepa_platform.sweep.search import OBJECTIVE, make_scheduler, search_algorithm
from brainjepa_platform.sweep.trial import PARENT_TAG, fingerprint_scores, trial_objective
from brainjepa_platform.train.config import PretrainConfig

ROOT = Path(__file__).resolve().parents[1]
MASKING, GRADIENTS = ROOT / "configs" / "sweep" / "masking.yaml", ROOT / "configs" / "sweep" / "gradients.yaml"
LEARNABILITY = ROOT / "configs" / "sweep" / "learnability.yaml"
FINGERPRINT = ObjectiveConfig(kind="fingerprint", metric="identification", fractions=(0.5, 0.25, 0.25), seed=1)
TOKEN_FC = ObjectiveConfig(
    kind="fingerprint", metric="i_diff", fractions=(0.5, 0.25, 0.25), seed=1, features="token_fc", centring="train"
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("sweep-data") / "cohort")
    write_parquet(uri, SynthOptions(subjects=12, rois=24, frames=(100, 140)))
    return uri


def tiny(cohort: str, tmp_path: Path, name: str, *extra: str) -> list[str]:
    """Overrides: the tiny model, 8 steps of 1 worker per trial, a sqlite MLflow store in ``tmp_path``."""
    return [
        f"name={name}",
        f"storage_path={tmp_path / 'sweeps'}",
        f"pretrain_config={ROOT / 'configs/pretrain/tiny.yaml'}",
        f"data.dataset={cohort}",
        f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        "model.frames=32",
        "model.patch=8",
        "train.steps=8",
        "train.checkpoint_every=4",
        "train.batch_size=4",
        "train.num_workers=1",
        "train.log_every=1",
        "data.windows_per_scan=8",
        "data.val_fraction=0.3",
        "data.shuffle_buffer=8",
        "objective.fractions=[0.5,0.25,0.25]",
        "verbose=0",
        *extra,
    ]


def child_runs(tracking: str, parent_run_id: str) -> list:
    client = MlflowClient(tracking)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'")


def loss_steps(tracking: str, run_id: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(tracking).get_metric_history(run_id, "loss"))


class InterruptAfterFirstTrial(tune.Callback):
    """Stop the sweep as Ctrl+C would (Tune's SIGUSR1 handler) once a trial has finished, only once."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        if not self.marker.exists():
            self.marker.write_text(trial.trial_id)
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.usefixtures("ray_cluster")
def test_interrupted_sweep_resumes_from_the_command_line(cohort, tmp_path, mlflow_db, capsys) -> None:
    """Random search + ASHA, 2 trials of the tiny model: interrupted after the first trial, then the same
    sweep from the command line restores it, trains only the second trial and finishes the sweep."""
    space = (
        "space={masks.cross_roi_scale: {values: [[0.3, 0.45], [0.45, 0.6]]}, "
        "optim.lr: {low: 1e-3, high: 3e-3, log: true}}"
    )
    overrides = [
        *tiny(cohort, tmp_path, "masks"),
        space,
        "num_samples=2",
        "scheduler.grace_period=4",
        "model.n_gradients=4",
    ]
    tracking, out_dir = mlflow_db, tmp_path / "sweeps" / "masks"
    first = run_sweep(load_sweep_config(MASKING, overrides), callbacks=[InterruptAfterFirstTrial(tmp_path / "m")])
    assert not first.completed and not (out_dir / BEST_CONFIG).exists()
    finished = [r for r in first.trials if r.status == "done"]
    assert len(finished) == 1 and finished[0].trial_id == (tmp_path / "m").read_text()
    assert math.isfinite(finished[0].objective)
    assert loss_steps(tracking, finished[0].run_id) == list(range(1, 9))

    assert cli.main(["sweep", "--config", str(MASKING), *overrides]) == 0  # the same sweep again: restored
    out = capsys.readouterr().out
    assert "val pearson_r (coupling)" in out and "Best: trial" in out
    state = json.loads((out_dir / "sweep.json").read_text())
    assert state["parent_run_id"] == first.parent_run_id
    children = child_runs(tracking, first.parent_run_id)
    assert len(children) == 2
    for run in children:  # each trial: its params (the swept ones also as sweep.*) and its train metrics
        assert run.data.params["model.size"] == "tiny" and "sweep.optim.lr" in run.data.params
        assert 1e-3 <= float(run.data.params["optim.lr"]) <= 3e-3
        assert run.data.params["masks.cross_roi_scale"] in ("[0.3, 0.45]", "[0.45, 0.6]")
        assert loss_steps(tracking, run.info.run_id)[:4] == [1, 2, 3, 4]  # ASHA may stop the second at step 4
    assert loss_steps(tracking, finished[0].run_id) == list(range(1, 9))  # the finished trial was not retrained
    best_run = MlflowClient(tracking).get_run(state["best"]["mlflow_run_id"])
    assert best_run.data.metrics["objective"] == pytest.approx(state["best"]["objective"])
    best = load_config(PretrainConfig, out_dir / BEST_CONFIG)
    assert best.train.name == "masks-best" and best.tracking.register and best.model.n_gradients == 4
    assert str(list(best.masks.cross_roi_scale)) == best_run.data.params["masks.cross_roi_scale"]
    assert best.optim.lr == pytest.approx(float(best_run.data.params["optim.lr"]))
    version = MlflowClient(tracking).get_model_version_by_alias("brainjepa-encoder-atlas-24", "best-sweep")
    assert version.run_id == best_run.info.run_id and str(version.version) == state["best"]["model_version"]
    assert (out_dir / "objective_vs_params.png").stat().st_size > 0
    assert all(r.info.run_id in (out_dir / "results.csv").read_text() for r in children)
    parent = MlflowClient(tracking).get_run(first.parent_run_id)
    assert parent.info.status == "FINISHED" and "best_objective" in parent.data.metrics
    assert {a.path for a in MlflowClient(tracking).list_artifacts(parent.info.run_id, "sweep")} >= {
        f"sweep/{BEST_CONFIG}",
        "sweep/results.txt",
        "sweep/objective_vs_params.png",
    }

    third = run_sweep(load_sweep_config(MASKING, overrides))  # finished: nothing trains, nothing re-registers
    assert third.completed and third.model_version == state["best"]["model_version"]
    assert sorted(loss_steps(tracking, r.info.run_id) for r in children) == sorted(
        loss_steps(tracking, r.run_id) for r in third.trials
    )
    with pytest.raises(ValueError, match="optim.weight_decay"):
        run_sweep(load_sweep_config(MASKING, [*overrides, "optim.weight_decay=0.1"]))


# --- Ray Data only: the fingerprint objective on a real embedding ------------------------------------------
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("ray_cluster")
def test_fingerprint_objective_scores_the_validation_subjects_across_sessions(tmp_path) -> None:
    """trial_objective(kind=fingerprint) of a random tiny encoder on a 12-subject, 2-session synthetic cohort
    equals identification / I_diff computed directly on the validation (and test) subjects' embeddings,
    with the sessions read from the scan ids; with features=token_fc, centring=train on their token-FC minus
    the train subjects' mean token-FC."""
    uri = str(tmp_path / "fp-cohort")
    write_parquet(uri, SynthOptions(subjects=12, rois=24, frames=(100, 140), seed=5, scans_per_subject=2))
    cfg = load_config(
        PretrainConfig,
        ROOT / "configs/pretrain/tiny.yaml",
        [f"data.dataset={uri}", "model.n_rois=24", "model.frames=32", "model.patch=8", "model.n_gradients=4"],
    )
    gradients = np.random.default_rng(0).standard_normal((24, 4)).astype(np.float32)
    torch.manual_seed(0)
    state = BrainEncoder(cfg.model, torch.from_numpy(gradients)).state_dict()
    manifest = read_manifest(uri)
    scores = trial_objective(cfg, FINGERPRINT, state, gradients, manifest)
    token_scores = trial_objective(cfg, TOKEN_FC, state, gradients, manifest)

    bundle = bundle_from_engine_state(state, cfg.model, gradients, manifest)
    emb = embed_dataset(bundle, uri, target_tr=cfg.data.target_tr, token_fc=True)
    assert len(emb.scan_ids) == 24 and not emb.skipped and emb.token_fc is not None
    assert emb.sessions == [scan.split("_")[1].removeprefix("ses-") for scan in emb.scan_ids]  # sub-001_ses-1_...
    split = subject_split(emb.subjects, FINGERPRINT.seed, FINGERPRINT.fractions)
    for part, rows in (("val", split.val), ("test", split.test)):
        subjects = np.asarray(emb.subjects)[rows]
        session = np.asarray([int(s) for s in np.asarray(emb.sessions)[rows]])
        assert scores[f"{part}_identification"] == identification_accuracy(emb.features[rows], subjects, session)
        assert scores[f"{part}_i_diff"] == pytest.approx(
            differential_identifiability(emb.features[rows], subjects, session), abs=1e-9
        )
        assert scores[f"{part}_subjects"] == 3 and scores[f"{part}_chance"] == pytest.approx(1 / 3)
        centred = emb.token_fc[rows] - emb.token_fc[split.train].mean(axis=0)
        assert token_scores[f"{part}_i_diff"] == pytest.approx(
            differential_identifiability(centred, subjects, session), abs=1e-6
        )
        assert token_scores[f"{part}_identification"] == identification_accuracy(centred, subjects, session)
    assert scores[OBJECTIVE] == scores["val_identification"] and 0.0 <= scores[OBJECTIVE] <= 1.0
    assert token_scores[OBJECTIVE] == token_scores["val_i_diff"] != scores["val_i_diff"]
    assert scores["probe_task"] == "fingerprint" and scores["probe_scans"] == 24 and scores["feature_rank"] > 1


# --- without Ray --------------------------------------------------------------------------------------------
def test_config_errors_name_the_key(tmp_path) -> None:
    base = [f"pretrain_config={ROOT / 'configs/pretrain/tiny.yaml'}"]
    with pytest.raises(ConfigError, match=r"masks.cross_roi is not.*did you mean \['masks.cross_roi_scale'"):
        load_sweep_config(None, [*base, "space={masks.cross_roi: {values: [[0.3, 0.5]]}}"])
    with pytest.raises(ConfigError, match=r"search=grid needs values.*optim.lr"):
        load_sweep_config(MASKING, ["search=grid"])
    with pytest.raises(ConfigError, match="low <= high"):
        load_sweep_config(None, [*base, "space={masks.cross_roi_scale: {values: [[0.7, 0.5]]}}"])
    with pytest.raises(ConfigError, match="objective.metric"):
        load_sweep_config(MASKING, ["objective.metric=pearson"])


def test_overrides_search_algorithms_and_scheduler() -> None:
    cfg = load_sweep_config(
        MASKING,
        ["data.dataset=s3://bucket/cohort", "train.steps=40", "train.checkpoint_every=10", "scheduler.grace_period=0"],
    )
    assert cfg.pretrain["data"]["dataset"] == "s3://bucket/cohort" and cfg.base_pretrain().model.size == "small"
    asha = make_scheduler(cfg, cfg.base_pretrain())  # rungs at 10, 20, 30: never at the final step
    assert (asha._time_attr, asha._metric, asha._mode, asha._max_t) == ("step", "val_loss", "min", 30)
    assert [m for m, _ in asha._brackets[0]._rungs] == [20, 10] and not asha._stop_last_trials
    short = load_sweep_config(MASKING, ["train.steps=40", "train.checkpoint_every=10", "scheduler.grace_period=40"])
    with pytest.raises(ValueError, match="grace_period=40 leaves ASHA no checkpoint"):
        make_scheduler(short, short.base_pretrain())
    assert make_scheduler(load_sweep_config(GRADIENTS), cfg.base_pretrain()) is None
    assert load_sweep_config(GRADIENTS).expected_trials() == 6
    if importlib.util.find_spec("optuna") is None:
        with pytest.raises(ValueError, match="optuna is not installed"):
            search_algorithm(load_sweep_config(MASKING, ["search=bayes"]))
    else:
        assert type(search_algorithm(load_sweep_config(MASKING, ["search=bayes"]))).__name__ == "OptunaSearch"


def test_table_and_plot(tmp_path) -> None:
    cfg = load_sweep_config(GRADIENTS)
    rows = [
        TrialRow("a_00000", {"model.n_gradients": 3, "model.positional": "gradient"}, 0.41, 0.2, "done"),
        TrialRow("a_00001", {"model.n_gradients": 10, "model.positional": "sincos"}, 0.55, 0.19, "done"),
        TrialRow("a_00002", {"model.n_gradients": 30, "model.positional": "gradient"}, math.nan, 0.3, "stopped"),
    ]
    table = format_table(rows, list(cfg.space), "val pearson_r (coupling)", rows[1])
    assert table.splitlines()[3].startswith("* a_00001") and "stopped" in table
    assert plot_objective(rows, cfg.space, "val r", tmp_path / "p.png", rows[1]).stat().st_size > 0


def test_objective_kind_checks_its_metric() -> None:
    with pytest.raises(
        ConfigError,
        match=r"objective.metric='pearson_r' with objective.kind=fingerprint: expected one of \['identification', 'i_d",
    ):
        load_sweep_config(MASKING, ["objective.kind=fingerprint"])
    with pytest.raises(
        ConfigError, match=r"objective.metric='identification' with objective.kind=probe: expected one of .*'pearson_r'"
    ):
        ObjectiveConfig(metric="identification")
    with pytest.raises(ConfigError, match=r"objective.mode='min': fingerprint metrics .* expected max"):
        ObjectiveConfig(kind="fingerprint", metric="i_diff", mode="min")
    with pytest.raises(ConfigError, match=r"objective.kind: expected one of \['probe', 'fingerprint'\]"):
        load_sweep_config(MASKING, ["objective.kind=fingerprinting"])
    assert objective_label(FINGERPRINT) == "val identification (fingerprint)"
    assert objective_label(ObjectiveConfig()) == "val pearson_r (coupling)"
    assert objective_label(TOKEN_FC) == "val i_diff (fingerprint, train-centred token_fc)"
    with pytest.raises(ConfigError, match=r"objective.features='token_fc'.* apply to objective.kind=fingerprint"):
        load_sweep_config(MASKING, ["objective.features=token_fc"])
    with pytest.raises(ConfigError, match=r"objective.centring: expected one of \['none', 'train'\]"):
        load_sweep_config(LEARNABILITY, ["objective.centring=cohort"])


def embeddings(subjects: list[str], sessions: list[str], seed: int = 0) -> Embeddings:
    """Random 8-D scan features and 6-value token-FC of the given subjects and sessions (scan ids in order)."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((len(subjects), 8)).astype(np.float32)
    token_fc = rng.uniform(-1, 1, (len(subjects), 6)).astype(np.float32)
    ids = [f"sub-{s}_ses-{t}_{i}" for i, (s, t) in enumerate(zip(subjects, sessions))]
    return Embeddings(
        ids, subjects, features, pd.DataFrame(index=range(len(ids))), sessions=sessions, token_fc=token_fc
    )


def test_fingerprint_objective_leaves_out_single_session_subjects_and_names_the_fix() -> None:
    subjects = [f"{i:02d}" for i in range(12) for _ in range(2)]  # 12 subjects, 2 scans each: 6 / 3 / 3
    split = subject_split(subjects, FINGERPRINT.seed, FINGERPRINT.fractions)
    single = subjects[split.val[0]]  # a validation subject with two runs of one session: no query across sessions
    sessions = ["1" if s == single else str(r % 2 + 1) for r, s in enumerate(subjects)]
    emb = embeddings(subjects, sessions)
    scores = fingerprint_scores(emb, FINGERPRINT, "data/fp")
    for part, rows in (("val", split.val), ("test", split.test)):
        rows = np.asarray([r for r in rows if subjects[r] != single])
        expected = identification_accuracy(emb.features[rows], np.asarray(subjects)[rows], np.asarray(sessions)[rows])
        assert scores[f"{part}_identification"] == expected
    assert (scores["val_chance"], scores["test_chance"]) == (1 / 2, 1 / 3)
    assert scores[OBJECTIVE] == scores["val_identification"]
    # token-FC minus the train subjects' mean: a pattern shared by every scan dominates the uncentred correlations
    emb.token_fc += 5.0 * np.random.default_rng(1).standard_normal(6).astype(np.float32)
    token_scores = fingerprint_scores(emb, TOKEN_FC, "data/fp")
    centred = emb.token_fc - emb.token_fc[split.train].mean(axis=0)
    rows = np.asarray([r for r in split.val if subjects[r] != single])
    expected = differential_identifiability(centred[rows], np.asarray(subjects)[rows], np.asarray(sessions)[rows])
    assert token_scores[OBJECTIVE] == token_scores["val_i_diff"] == pytest.approx(expected, abs=1e-9)
    uncentred = dataclasses.replace(TOKEN_FC, centring="none")
    assert fingerprint_scores(emb, uncentred, "data/fp")["val_i_diff"] != pytest.approx(expected, abs=1e-3)
    without = Embeddings(emb.scan_ids, emb.subjects, emb.features, emb.phenotypes, sessions=emb.sessions)
    with pytest.raises(ValueError, match=r"objective.features=token_fc: embed the dataset .*token_fc=True"):
        fingerprint_scores(without, TOKEN_FC, "data/fp")
    one_session = embeddings(subjects, [""] * len(subjects))
    with pytest.raises(ValueError, match=r"0 of the 3 validation subjects of dataset data/fp .* --scans-per-subject 2"):
        fingerprint_scores(one_session, FINGERPRINT, "data/fp")


def test_learnability_sweep_config_loads() -> None:
    cfg = load_sweep_config(LEARNABILITY, ["data.dataset=data/fp-cohort"])
    base = cfg.base_pretrain()
    assert cfg.expected_trials() == 16 and cfg.search == "random" and cfg.scheduler.kind == "fifo"
    assert sorted(cfg.space) == [
        "masks.cross_roi_scale",
        "masks.in_block_scale",
        "model.n_gradients",
        "pretext.reg_weight",
    ]
    assert (cfg.space["pretext.reg_weight"].low, cfg.space["pretext.reg_weight"].high) == (0.0001, 0.01)
    assert cfg.space["pretext.reg_weight"].log and cfg.space["masks.in_block_scale"].values == [[0.0, 0.0], [0.2, 0.3]]
    assert max(cfg.space["model.n_gradients"].values) < 24  # fits the synthetic cohort's 24 ROIs
    objective = cfg.objective
    assert (objective.kind, objective.metric, objective.mode) == ("fingerprint", "i_diff", "max")
    assert (objective.features, objective.centring) == ("token_fc", "train")
    assert (base.model.qk_norm, base.model.init, base.pretext.regularizer, base.pretext.reg_on) == (
        True,
        "fan_in",
        "vicreg",
        "tokens",
    )
    assert base.model.size == "tiny" and base.data.dataset == "data/fp-cohort"
