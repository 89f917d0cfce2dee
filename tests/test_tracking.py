"""MLflow tracking and registry against a real sqlite-backed store in tmp_path (no mocks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from brainjepa.jepa import BrainJEPA, PretrainEngine
from brainjepa.model import ModelConfig
from brainjepa.preprocess import RobustStats
from brainjepa.schedules import OptimConfig
from brainjepa_platform.tracking.bundle import read_bundle, write_bundle
from brainjepa_platform.tracking.params import MASK, flatten_params, log_params, redact
from brainjepa_platform.tracking.registry import load_encoder, log_encoder, log_run_artifacts
from brainjepa_platform.tracking.store import default_tracking_uri, ensure_experiment

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzz-secret-value"
ACCESS_KEY = "AKIATESTACCESSKEY123"
ATLAS = "toy12"
NAME = "brainjepa-encoder-toy12-12"  # encoder_model_name(ATLAS, 12): log_encoder's default name

pytestmark = pytest.mark.timeout(120)


def tiny_cfg() -> ModelConfig:
    return ModelConfig(size="tiny", n_rois=12, frames=32, patch=8, n_gradients=3)


def tiny_model(seed: int, gradients: torch.Tensor) -> BrainJEPA:
    torch.manual_seed(seed)
    return BrainJEPA(tiny_cfg(), gradients).eval()


def raw_series(batch: int, seed: int = 3, rois: int = 12, frames: int = 32) -> np.ndarray:
    """Raw float32 series, the dtype the pyfunc's signature declares."""
    rng = np.random.default_rng(seed)
    return rng.normal(5.0, 3.0, size=(batch, rois, frames)).astype(np.float32)


def direct_embedding(model: BrainJEPA, stats: RobustStats, x: np.ndarray, pool: bool = True) -> np.ndarray:
    with torch.no_grad():
        tokens = model.target_encoder(torch.from_numpy(stats.scale(x)))
    return (tokens.mean(dim=1) if pool else tokens).numpy()


def secret_config() -> dict[str, Any]:
    return {
        "model": {"size": "tiny", "n_rois": 12, "n_tokens_hint": 48},
        "storage": {
            "uri": "s3://bucket/cohort",
            "backup": f"s3://{ACCESS_KEY}:{SECRET}@bucket/x",
            "endpoint": "http://minio:pw-in-url@127.0.0.1:9000",
            "s3": {"aws_secret_access_key": SECRET, "region": "us-east-1"},
        },
        "note": SECRET,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "masks": {"min_context": 10, "scales": [0.1, 0.2]},
    }


def _reset_mlflow() -> None:
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One sqlite store with a run holding params, run artifacts and two registered encoder versions."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    rng = np.random.default_rng(0)
    gradients = torch.from_numpy(rng.standard_normal((12, 4))).float()
    stats = RobustStats(median=rng.normal(5.0, 1.0, 12), iqr=rng.uniform(1.0, 4.0, 12))
    labels = [f"roi_{i}" for i in range(12)]
    first, second = tiny_model(0, gradients), tiny_model(1, gradients)
    engine = PretrainEngine(second, OptimConfig(), total_steps=4)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        mp.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        mlflow.set_tracking_uri(uri)
        try:
            experiment_id = ensure_experiment("pretrain", uri)
            with mlflow.start_run(experiment_id=experiment_id) as run:
                logged = log_params(secret_config())
                log_run_artifacts(secret_config(), gradients, stats, labels, ATLAS)
                extra = root / "train_config.yaml"
                extra.write_text("steps: 4\n")
                v1 = log_encoder(first, tiny_cfg(), gradients, stats, labels, ATLAS, extra_artifacts={"train": extra})
                v2 = log_encoder(engine.state_dict(), tiny_cfg(), None, stats.to_dict(), labels, ATLAS, step=4)
            yield {
                "uri": uri,
                "root": root,
                "run_id": run.info.run_id,
                "versions": (v1, v2),
                "logged": logged,
                "models": (first, second),
                "stats": stats,
                "labels": labels,
                "gradients": gradients,
            }
        finally:
            _reset_mlflow()


@pytest.fixture
def store(registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Point this test's MLflow at the module's store; restore global state afterwards."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry["uri"])
    mlflow.set_tracking_uri(registry["uri"])
    yield registry
    _reset_mlflow()


def test_default_tracking_uri_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert default_tracking_uri(tmp_path) == "http://tracking.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_ensure_experiment_absolute_artifact_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"
    (tmp_path / "db").mkdir()
    client = MlflowClient(tracking_uri=uri)
    exp_id = ensure_experiment("jepa/pretrain", uri)
    assert ensure_experiment("jepa/pretrain", uri) == exp_id
    location = client.get_experiment(exp_id).artifact_location
    assert location == (tmp_path / "db" / "mlartifacts" / "jepa_pretrain").resolve().as_uri()
    s3_id = ensure_experiment("remote", uri, artifact_root="s3://models/mlflow/")
    assert client.get_experiment(s3_id).artifact_location == "s3://models/mlflow/remote"
    client.delete_experiment(s3_id)
    assert ensure_experiment("remote", uri) == s3_id
    assert client.get_experiment(s3_id).lifecycle_stage == "active"


def test_redact_masks_credential_keys_and_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    out = redact({"db": {"password": "hunter2", "host": "h"}, "api_token": "t", "n_tokens": 5, "x": [SECRET, 1]})
    assert out == {"db": {"password": MASK, "host": "h"}, "api_token": MASK, "n_tokens": 5, "x": [MASK, 1]}
    flat = flatten_params(secret_config())
    assert flat["storage.s3.aws_secret_access_key"] == MASK
    assert flat["AWS_ACCESS_KEY_ID"] == MASK
    assert flat["note"] == MASK
    assert flat["storage.endpoint"] == f"http://minio:{MASK}@127.0.0.1:9000"
    assert flat["storage.backup"] == MASK
    assert flat["model.n_tokens_hint"] == "48"
    assert flat["masks.scales"] == "[0.1, 0.2]"
    assert flat["storage.uri"] == "s3://bucket/cohort"
    assert all(isinstance(v, str) for v in flat.values())
    assert not any(SECRET in k or SECRET in v or ACCESS_KEY in v for k, v in flat.items())


def test_no_secret_in_params_artifacts_or_database(store: dict[str, Any]) -> None:
    params = MlflowClient().get_run(store["run_id"]).data.params
    assert params == store["logged"]
    assert params["model.n_rois"] == "12" and params["storage.s3.aws_secret_access_key"] == MASK
    for key, value in params.items():
        assert SECRET not in key and SECRET not in value and ACCESS_KEY not in value
    files = [p for p in Path(store["root"]).rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.yaml", "gradients.npy", "robust_stats.json", "rois.json", "encoder_state.pt"} <= names
    assert "train_config.yaml" in names and "MLmodel" in names
    config_text = next(p for p in files if p.name == "config.yaml").read_text()
    assert "min_context: 10" in config_text and "aws_secret_access_key: '***REDACTED***'" in config_text
    for path in files:  # every artifact, the model bundles and the sqlite database itself
        data = path.read_bytes()
        assert SECRET.encode() not in data, path
        assert ACCESS_KEY.encode() not in data, path


def test_two_versions_and_alias(store: dict[str, Any]) -> None:
    assert store["versions"] == ("1", "2")
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(NAME, "current").version) == "2"
    version = client.get_model_version(NAME, "2")
    assert str(version.version) == "2"
    assert client.get_model_version(NAME, "1").run_id == store["run_id"]
    # without training tags a version still says what it accepts (no steps, dataset or loss: not known)
    assert {k: version.tags[k] for k in ("atlas", "n_rois", "frames", "dim")} == {
        "atlas": ATLAS,
        "n_rois": "12",
        "frames": "32",
        "dim": "64",
    }
    assert "steps" not in version.tags and "target_tr" not in version.tags and "final.loss" not in version.tags
    assert "float32 (batch, 12 ROIs, 32 frames) -> (batch, 64) embeddings" in version.description
    signature = mlflow.models.get_model_info(f"models:/{NAME}/2").signature
    assert signature.inputs.inputs[0].shape == (-1, 12, 32) and signature.outputs.inputs[0].shape == (-1, 64)


def test_pyfunc_predict_matches_target_encoder(store: dict[str, Any]) -> None:
    x = raw_series(3)
    first, second = store["models"]
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@current")
    out = model.predict(x)
    assert out.shape == (3, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out, direct_embedding(second, store["stats"], x), rtol=1e-5, atol=1e-5)
    tokens = model.predict(x, params={"pooling": "none", "batch_size": 2})
    assert tokens.shape == (3, 12 * 4, 64)
    np.testing.assert_allclose(tokens, direct_embedding(second, store["stats"], x, pool=False), atol=1e-5)
    old = mlflow.pyfunc.load_model(f"models:/{NAME}/1").predict(x)
    np.testing.assert_allclose(old, direct_embedding(first, store["stats"], x), rtol=1e-5, atol=1e-5)
    assert not np.allclose(old, out)


def test_predict_rejects_wrong_shape_with_clear_message(store: dict[str, Any]) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/latest")  # MLflow checks the signature first
    with pytest.raises(MlflowException, match=r"input \(2, 11, 32\) does not match expected shape \(-1, 12, 32\)"):
        model.predict(raw_series(2, rois=11))
    with pytest.raises(MlflowException, match="dtype of input float64 does not match expected dtype float32"):
        model.predict(raw_series(1).astype(np.float64))
    with pytest.raises(MlflowException, match="pooling must be 'mean' or 'none', got 'max'"):
        model.predict(raw_series(1), params={"pooling": "max"})
    bundle = load_encoder(f"models:/{NAME}/latest")  # no signature there: the bundle's own check, any dtype
    with pytest.raises(ValueError, match=r"model expects 12 ROIs \(atlas toy12\) x 32 frames.*got shape \(2, 11, 32\)"):
        bundle.embed(raw_series(2, rois=11))
    with pytest.raises(ValueError, match=r"x 32 frames.*got shape \(2, 12, 24\)"):
        bundle.embed(raw_series(2, frames=24).astype(np.float64))


def test_load_encoder_round_trip(store: dict[str, Any]) -> None:
    bundle = load_encoder(f"models:/{NAME}@latest")
    expected = store["models"][1].target_encoder.state_dict()
    got = bundle.encoder.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    assert not bundle.encoder.training
    assert bundle.config == tiny_cfg()
    assert bundle.atlas == ATLAS and bundle.roi_labels == store["labels"]
    np.testing.assert_array_equal(bundle.stats.median, store["stats"].median)
    np.testing.assert_array_equal(bundle.stats.iqr, store["stats"].iqr)
    by_name = load_encoder(f"models:/{NAME}@latest")  # MLflow reserves that alias: read as models:/name/latest
    assert torch.equal(by_name.encoder.pos_embed.gradients, bundle.encoder.pos_embed.gradients)
    first = load_encoder(f"models:/{NAME}/1")
    np.testing.assert_array_equal(first.gradients, store["gradients"].numpy())
    assert torch.equal(first.encoder.patch_embed.weight, store["models"][0].target_encoder.patch_embed.weight)


def test_log_encoder_needs_an_active_run(store: dict[str, Any]) -> None:
    model = store["models"][0]
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        log_encoder(model, tiny_cfg(), store["gradients"], store["stats"], store["labels"], ATLAS)


def test_alias_latest_is_the_builtin_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow reserves the alias 'latest': log_encoder sets none and models:/name/latest (or @latest in
    load_encoder) gives the newest version."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    gradients = torch.from_numpy(np.random.default_rng(1).standard_normal((12, 3))).float()
    model = tiny_model(2, gradients)
    stats = RobustStats(median=np.zeros(12), iqr=np.ones(12))
    try:
        with mlflow.start_run(experiment_id=ensure_experiment("alias", uri)):
            version = log_encoder(
                model,
                tiny_cfg(),
                gradients,
                stats,
                [str(i) for i in range(12)],
                ATLAS,
                registered_name="enc",
                alias="latest",
            )
        assert version == "1" and MlflowClient().get_registered_model("enc").aliases == {}
        x = raw_series(2)
        expected = direct_embedding(model, stats, x)
        np.testing.assert_allclose(mlflow.pyfunc.load_model("models:/enc/latest").predict(x), expected, atol=1e-5)
        np.testing.assert_allclose(load_encoder("models:/enc@latest").embed(x), expected, atol=1e-5)
    finally:
        _reset_mlflow()


def test_bundle_sincos_and_validation(tmp_path: Path) -> None:
    cfg = ModelConfig(size="tiny", n_rois=12, frames=32, patch=8, positional="sincos")
    torch.manual_seed(0)
    model = BrainJEPA(cfg)
    stats = RobustStats(median=np.zeros(12), iqr=np.ones(12))
    labels = [str(i) for i in range(12)]
    paths = write_bundle(tmp_path, model.target_encoder.state_dict(), cfg, None, stats, labels, "a")
    bundle = read_bundle(paths)
    x = raw_series(2)
    np.testing.assert_allclose(bundle.embed(x), direct_embedding(model.eval(), stats, x), atol=1e-5)
    with pytest.raises(ValueError, match="11 ROI labels"):
        write_bundle(tmp_path, model.target_encoder.state_dict(), cfg, None, stats, labels[:11], "a")
    other = ModelConfig(size="tiny", n_rois=12, frames=32, patch=8, positional="sincos", dim=32)
    with pytest.raises(ValueError, match="does not fit the model config.*dim 32"):
        write_bundle(tmp_path, model.target_encoder.state_dict(), other, None, stats, labels, "a")
    with pytest.raises(ValueError, match="NaN"):
        bundle.embed(np.full((1, 12, 32), np.nan))
