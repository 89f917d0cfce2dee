"""``brainjepa import-checkpoint`` / ``export-checkpoint`` through a real sqlite MLflow registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from brainjepa.authors_format import read_authors_checkpoint, read_gradient_table
from brainjepa.jepa import BrainJEPA, PretrainEngine
from brainjepa.model import ModelConfig
from brainjepa.schedules import OptimConfig
from brainjepa_platform.cli.main import main
from brainjepa_platform.tracking.registry import load_encoder

DATA = Path(__file__).parent / "data" / "authors"
CHECKPOINT, GRADIENTS = str(DATA / "authors_checkpoint.pt"), str(DATA / "gradient_mapping_20.csv")


@pytest.fixture
def registry(mlflow_db, monkeypatch) -> Iterator[str]:
    """A fresh sqlite registry; MLflow's process-wide tracking URI and active experiment (which
    import-checkpoint sets, as a command does) are put back afterwards for the tests that follow."""
    import mlflow
    from mlflow.tracking import fluent

    uri = mlflow_db
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(fluent, "_active_experiment_id", fluent._active_experiment_id)
    yield uri
    mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_imported_model_embeds_like_the_authors_target_encoder(registry, tmp_path, capsys) -> None:
    assert main(["import-checkpoint", CHECKPOINT, "--gradients", GRADIENTS, "--name", "authors-test"]) == 0
    out = capsys.readouterr().out
    assert "width 64, 2 blocks, 4 heads, 20 ROIs x 160 frames" in out and "--scaling dataset" in out
    uri = out.strip().splitlines()[-1]
    assert uri == "models:/authors-test/1"
    bundle = load_encoder(uri)
    assert bundle.stats is None and bundle.target_tr == 0.735 and bundle.roi_labels[0] == "ROI-001"
    outputs = np.load(DATA / "authors_outputs.npz")
    with torch.no_grad():
        tokens = bundle.encoder(torch.from_numpy(outputs["series"]))
    reference = outputs["target_tokens"]
    assert np.abs(tokens.numpy() - reference).max() / np.abs(reference).max() <= 1e-5
    with pytest.raises(ValueError, match="--scaling dataset"):  # no statistics of its own: said, not guessed
        bundle.embed(outputs["series"])

    # with the cohort's statistics the registered model embeds raw series itself
    stats = tmp_path / "stats.npz"
    np.savez(stats, median=np.zeros(20), iqr=np.full(20, 2.0))
    assert (
        main(
            [
                "import-checkpoint",
                CHECKPOINT,
                "--gradients",
                GRADIENTS,
                "--name",
                "authors-test",
                "--stats",
                str(stats),
                "--tr",
                "0.72",
            ]
        )
        == 0
    )
    bundle = load_encoder("models:/authors-test/2")
    embedded = bundle.embed(2.0 * outputs["series"])
    np.testing.assert_allclose(embedded, reference.mean(axis=1), atol=1e-5)


def test_export_of_the_registered_model_is_their_target_encoder(registry, tmp_path) -> None:
    assert main(["import-checkpoint", CHECKPOINT, "--gradients", GRADIENTS, "--name", "authors-test"]) == 0
    out = tmp_path / "exported.pt"
    assert main(["export-checkpoint", "models:/authors-test/1", "--out", str(out)]) == 0
    exported = torch.load(out, weights_only=True)
    original = torch.load(CHECKPOINT, weights_only=True)
    assert exported["target_encoder"].keys() == original["target_encoder"].keys()
    for key, value in original["target_encoder"].items():
        torch.testing.assert_close(exported["target_encoder"][key], value, atol=1e-6, rtol=0)
    assert "predictor" not in exported and exported["opt"] is None


def test_export_of_a_pretraining_checkpoint_round_trips(tmp_path) -> None:
    cfg = ModelConfig(size="tiny", n_rois=20, frames=160, patch=16, n_gradients=3)
    gradients = read_gradient_table(Path(GRADIENTS).read_text())
    engine = PretrainEngine(BrainJEPA(cfg, gradients), OptimConfig(), total_steps=2)
    engine.save(tmp_path / "engine.pt")
    assert main(["export-checkpoint", str(tmp_path), "--out", str(tmp_path / "theirs.pt")]) == 0
    weights = read_authors_checkpoint(torch.load(tmp_path / "theirs.pt", weights_only=True), gradients)
    state = engine.model.state_dict()
    for key, value in weights.predictor.items():
        assert torch.equal(value, state[f"student.predictor.{key}"]), key
    for key, value in weights.encoder.items():
        assert torch.equal(value, state[f"target_encoder.{key}"]), key


def test_import_errors_name_the_problem(registry, tmp_path, capsys) -> None:
    assert main(["import-checkpoint", CHECKPOINT, "--gradients", str(tmp_path / "none.csv")]) == 2
    assert "none.csv" in capsys.readouterr().err
    bad = tmp_path / "g.csv"
    bad.write_text("\n".join(",".join(["1"] * 3) for _ in range(7)))
    assert main(["import-checkpoint", CHECKPOINT, "--gradients", str(bad)]) == 2
    assert "gradients' 7 ROIs" in capsys.readouterr().err


def test_a_gradient_artifact_brings_its_roi_labels_and_atlas(registry, tmp_path, capsys) -> None:
    from brainjepa.gradients import GradientArtifact, GradientParams, GradientProvenance

    table = read_gradient_table(Path(GRADIENTS).read_text()).numpy()
    labels = [f"7Networks_LH_{i}" for i in range(20)]
    GradientArtifact(table, np.ones(3), labels, GradientParams(3), GradientProvenance(atlas="toy20")).save(
        tmp_path / "gradients.npz"
    )
    assert (
        main(
            ["import-checkpoint", CHECKPOINT, "--gradients", str(tmp_path / "gradients.npz"), "--name", "authors-test"]
        )
        == 0
    )
    bundle = load_encoder(capsys.readouterr().out.strip().splitlines()[-1])
    assert bundle.roi_labels == labels and bundle.atlas == "toy20"
