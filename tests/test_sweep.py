"""Ray Tune sweeps on real services: a local Ray cluster, sqlite MLflow, a tiny synthetic cohort."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray import tune

from brainjepa.config import ConfigError, load_config
from brainjepa_platform.cli import main as cli
from brainjepa_platform.data.synth import SynthOptions, write_parquet
from brainjepa_platform.sweep.config import load_sweep_config
from brainjepa_platform.sweep.driver import run_sweep
from brainjepa_platform.sweep.results import BEST_CONFIG, TrialRow, format_table, plot_objective
from brainjepa_platform.sweep.search import make_scheduler, search_algorithm
from brainjepa_platform.sweep.trial import PARENT_TAG
from brainjepa_platform.train.config import PretrainConfig

ROOT = Path(__file__).resolve().parents[1]
MASKING, GRADIENTS = ROOT / "configs" / "sweep" / "masking.yaml", ROOT / "configs" / "sweep" / "gradients.yaml"


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
