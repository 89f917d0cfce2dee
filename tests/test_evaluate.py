"""Embedding and evaluation from the registry, on a real local Ray cluster and a sqlite MLflow store."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from brainjepa.fingerprint import differential_identifiability, identification_accuracy
from brainjepa.learnability import token_correlation
from brainjepa.model import BrainEncoder, ModelConfig
from brainjepa.preprocess import tiling_windows
from brainjepa_platform.cli.main import main
from brainjepa_platform.data.ingestion import shard_locations
from brainjepa_platform.data.manifest import read_manifest
from brainjepa_platform.data.synth import SynthOptions, write_parquet
from brainjepa_platform.evaluate.embed import embed_dataset, random_encoder_bundle, read_embeddings
from brainjepa_platform.evaluate.fingerprint import FingerprintConfig, run_fingerprint
from brainjepa_platform.evaluate.probe import linear_probe
from brainjepa_platform.evaluate.run import FC, MODEL, RANDOM
from brainjepa_platform.evaluate.splits import subject_split
from brainjepa_platform.tracking.registry import load_encoder, log_encoder
from brainjepa_platform.tracking.store import ensure_experiment

pytestmark = pytest.mark.usefixtures("ray_cluster")
TARGET_TR = 2.0


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("eval") / "cohort")
    write_parquet(uri, SynthOptions(subjects=16, rois=24, frames=(100, 140), seed=11))
    return uri


@pytest.fixture(scope="module")
def registered(cohort: str, tmp_path_factory) -> str:
    """A (randomly initialised) encoder for the cohort's atlas, registered like pretraining does."""
    tracking = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    manifest = read_manifest(cohort)
    cfg = ModelConfig(size="tiny", n_rois=24, frames=32, patch=8, n_gradients=4)
    gradients = np.random.default_rng(0).standard_normal((24, 4)).astype(np.float32)
    torch.manual_seed(1)
    encoder = BrainEncoder(cfg, torch.from_numpy(gradients))
    mlflow.set_tracking_uri(tracking)
    with mlflow.start_run(experiment_id=ensure_experiment("evaluate", tracking)):  # not an earlier test's experiment
        log_encoder(
            encoder.state_dict(),
            cfg,
            gradients,
            manifest.stats(),
            list(manifest.atlas.roi_labels),
            manifest.atlas.name,
            registered_name="eval-encoder",
            alias="current",
            target_tr=TARGET_TR,
        )
    return tracking


def first_scan(uri: str) -> tuple[str, np.ndarray, float]:
    loc, paths = shard_locations(uri)
    table = pq.read_table(paths[0], filesystem=loc.fs, columns=["scan_id", "tr", "n_rois", "series"]).to_pylist()
    row = min(table, key=lambda r: r["scan_id"])
    return row["scan_id"], np.asarray(row["series"], np.float32).reshape(row["n_rois"], -1), row["tr"]


def test_embed_cli_writes_every_scan_matching_a_direct_computation(cohort, registered, tmp_path) -> None:
    mlflow.set_tracking_uri(registered)
    out = tmp_path / "emb"
    model = "models:/eval-encoder@current"
    assert main(["embed", "--model", model, "--data", cohort, "--out", str(out), "--per-roi", "--token-fc"]) == 0
    table = read_embeddings(str(out))
    meta = json.loads((out / "embeddings.json").read_text())
    n_scans = read_manifest(cohort).counts.scans
    assert len(table) == meta["scans"] == n_scans and meta["dim"] == 64 and not meta["skipped"] and meta["token_fc"]
    assert list(table["scan_id"]) == sorted(table["scan_id"])
    assert {"age", "sex", "coupling", "subject"} <= set(table.columns)
    # the first scan by hand: tiling windows at the model's TR, the dataset's scaling, mean over windows and tokens
    bundle = load_encoder("models:/eval-encoder@current")
    scan_id, series, tr = first_scan(cohort)
    stats = read_manifest(cohort).stats()
    windows = np.stack([stats.scale(w) for w in tiling_windows(series, tr, TARGET_TR, 32)])
    with torch.no_grad():
        tokens = bundle.encoder(torch.from_numpy(windows)).numpy()
    row = table.set_index("scan_id").loc[scan_id]
    np.testing.assert_allclose(np.asarray(row["embedding"]), tokens.mean(axis=(0, 1)), rtol=1e-4, atol=1e-5)
    per_roi = np.asarray(row["per_roi"]).reshape(24, 64)
    np.testing.assert_allclose(per_roi, tokens.reshape(len(windows), 24, 4, 64).mean(axis=(0, 2)), rtol=1e-4, atol=1e-5)
    # token-FC: each ROI's tokens over every window's time patches, time-centred, correlated between ROIs
    by_roi = tokens.reshape(len(windows), 24, 4, 64).transpose(1, 0, 2, 3).reshape(24, 4 * len(windows), 64)
    token_fc = np.asarray(row["token_fc"])
    assert token_fc.shape == (24 * 23 // 2,) and np.abs(token_fc).max() <= 1 + 1e-6
    np.testing.assert_allclose(token_fc, token_correlation(by_roi), atol=1e-4)


def test_embed_refuses_a_dataset_of_another_atlas(registered, tmp_path) -> None:
    other = str(tmp_path / "other")
    write_parquet(other, SynthOptions(subjects=3, rois=20, frames=(100, 120), seed=2))
    mlflow.set_tracking_uri(registered)
    bundle = load_encoder("models:/eval-encoder@current")
    with pytest.raises(ValueError, match="20 ROIs .* trained on 24 ROIs"):
        embed_dataset(bundle, other)


def hand_probes(cohort: str, bundle, seeds: int) -> dict[str, list[dict[str, float]]]:
    """Per feature set and seed, the metrics of a linear probe of sex on the same subject split."""
    emb = embed_dataset(bundle, cohort, target_tr=TARGET_TR)
    random_emb = embed_dataset(random_encoder_bundle(bundle), cohort, target_tr=TARGET_TR)
    series = all_series(cohort)
    fc = []
    for scan_id in emb.scan_ids:
        r = np.corrcoef(series[scan_id])
        fc.append(np.arctanh(r[np.triu_indices(len(r), k=1)]))
    features = {MODEL: emb.features, RANDOM: random_emb.features, FC: np.asarray(fc, np.float32)}
    y = emb.phenotypes["sex"].astype(str).to_numpy()
    out: dict[str, list[dict[str, float]]] = {name: [] for name in features}
    for seed in range(seeds):
        split = subject_split(emb.subjects, seed, (0.6, 0.2, 0.2), labels=y)
        for name, x in features.items():
            out[name].append(dict(linear_probe(x, y, "classification", split, seed).metrics))
    return out


def all_series(uri: str) -> dict[str, np.ndarray]:
    loc, paths = shard_locations(uri)
    return {
        row["scan_id"]: np.asarray(row["series"], np.float64).reshape(row["n_rois"], -1)
        for path in paths
        for row in pq.read_table(path, filesystem=loc.fs, columns=["scan_id", "n_rois", "series"]).to_pylist()
    }


def test_evaluate_cli_compares_model_random_and_fc(cohort, registered, tmp_path) -> None:
    mlflow.set_tracking_uri(registered)
    out, logged = tmp_path / "evaluation", f"sqlite:///{tmp_path / 'evaluations.db'}"
    code = main(
        [
            "evaluate",
            "--model",
            "models:/eval-encoder@current",
            "--data",
            cohort,
            "--target",
            "sex",
            "--seeds",
            "2",
            "--out",
            str(out),
            f"tracking_uri={logged}",
        ]
    )
    assert code == 0
    assert mlflow.get_tracking_uri() == registered  # logged to its own store; the process's URI as it was
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "classification" and results["features"] == [MODEL, RANDOM, FC]
    for name in (MODEL, RANDOM, FC):
        assert set(results["summary"][name]) == {"accuracy", "balanced_accuracy", "f1", "auroc"}
        assert len(results["per_seed"][name]) == 2
    assert (out / "evaluation-sex.png").stat().st_size > 0 and "balanced_accuracy" in (out / "table.txt").read_text()
    # each feature set's numbers are a probe on that feature set: the model's embeddings, a seed-0 random
    # encoder's, and Fisher-z FC by hand (a swap of two feature sets would not match)
    by_hand = hand_probes(cohort, load_encoder("models:/eval-encoder@current"), seeds=2)
    for name in (MODEL, RANDOM, FC):
        for seed, reported in enumerate(results["per_seed"][name]):
            assert reported["metrics"] == pytest.approx(by_hand[name][seed], abs=1e-6), (name, seed)
    assert by_hand[MODEL] != by_hand[RANDOM] and by_hand[MODEL] != by_hand[FC] and by_hand[RANDOM] != by_hand[FC]
    client = MlflowClient(logged)
    runs = client.search_runs([client.get_experiment_by_name("brainjepa-evaluate").experiment_id])
    metrics = runs[0].data.metrics
    assert {f"{MODEL}.accuracy.mean", f"{RANDOM}.auroc.std", f"{FC}.f1.mean"} <= set(metrics)
    assert runs[0].data.params["target"] == "sex"


def test_evaluate_unknown_target_names_the_columns(cohort, registered, tmp_path, capsys) -> None:
    mlflow.set_tracking_uri(registered)
    code = main(
        [
            "evaluate",
            "--model",
            "models:/eval-encoder@current",
            "--data",
            cohort,
            "--target",
            "iq",
            "--seeds",
            "1",
            "--out",
            str(tmp_path / "e"),
            f"tracking_uri={registered}",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "'iq' is not a phenotype column" in err and "coupling" in err


def test_fingerprint_cli_compares_model_random_draws_and_fc(registered, tmp_path) -> None:
    """``brainjepa fingerprint`` on a 2-session cohort: every feature set's scores equal identification / I_diff
    computed by hand on cohort-centred features (model and seed-0/1 random encoders: pooled and token-FC; FC),
    logged to MLflow; a cohort with one session per subject is refused with the fix."""
    data = str(tmp_path / "sessions")
    write_parquet(data, SynthOptions(subjects=6, rois=24, frames=(100, 120), seed=3, scans_per_subject=2))
    mlflow.set_tracking_uri(registered)
    out, logged = tmp_path / "fp", f"sqlite:///{tmp_path / 'fp.db'}"
    model = "models:/eval-encoder@current"
    args = ["fingerprint", "--model", model, "--data", data, "--random-draws", "2", "--out", str(out)]
    assert main([*args, f"tracking_uri={logged}"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert (results["scans"], results["subjects"]) == (12, 6) and (out / "fingerprint.png").stat().st_size > 0

    bundle = load_encoder(model)
    emb = embed_dataset(bundle, data, token_fc=True)
    session = np.asarray([int(s) for s in emb.sessions])
    subjects = np.asarray(emb.subjects)
    series = all_series(data)
    fc = np.stack([np.arctanh(np.corrcoef(series[s])[np.triu_indices(24, k=1)]) for s in emb.scan_ids])

    def by_hand(x: np.ndarray) -> list[float]:
        x = x - x.mean(axis=0)
        return [identification_accuracy(x, subjects, session), differential_identifiability(x, subjects, session)]

    draws = [embed_dataset(random_encoder_bundle(bundle, seed=d), data, token_fc=True) for d in range(2)]
    expected = {
        "brain-jepa pooled": [by_hand(emb.features)],
        "brain-jepa token-FC": [by_hand(emb.token_fc)],
        "random-encoder pooled": [by_hand(d.features) for d in draws],
        "random-encoder token-FC": [by_hand(d.token_fc) for d in draws],
        "fc-baseline": [by_hand(fc)],
    }
    for name, values in expected.items():
        reported = results["scores"][name]
        assert reported["identification"] == pytest.approx([v[0] for v in values], abs=1e-9), name
        assert reported["i_diff"] == pytest.approx([v[1] for v in values], abs=1e-5), name
    assert expected["random-encoder token-FC"][0] != expected["random-encoder token-FC"][1]  # two draws
    lead = results["model_vs_random"]["token-FC i_diff"]
    mean_draws = np.mean([v[1] for v in expected["random-encoder token-FC"]])
    assert lead["difference"] == pytest.approx(expected["brain-jepa token-FC"][0][1] - mean_draws, abs=1e-5)
    client = MlflowClient(logged)
    run = client.search_runs([client.get_experiment_by_name("brainjepa-evaluate").experiment_id])[0]
    assert {"brain-jepa token-FC.i_diff.mean", "random-encoder pooled.identification.std"} <= set(run.data.metrics)

    single = str(tmp_path / "one-session")
    write_parquet(single, SynthOptions(subjects=4, rois=24, frames=(100, 120), seed=4))
    with pytest.raises(ValueError, match=r"one-session: 1 subject\(s\) have scans from 2\+ sessions, 2 are needed"):
        run_fingerprint(FingerprintConfig(data=single, random_draws=1, out=str(tmp_path / "x")), bundle)
