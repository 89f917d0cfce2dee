"""MLflow tracking and model registry for Brain-JEPA runs (SPEC sections 1, 4 and 7).

* ``default_tracking_uri`` / ``ensure_experiment``: a sqlite-backed store by default and experiments
  with an absolute artifact location (Ray workers change directory).
* ``flatten_params`` / ``redact`` / ``log_params``: configs become dotted params with anything that
  looks like a credential masked; nothing reaches MLflow without going through ``redact``.
* ``EncoderModel``: the target encoder as an MLflow pyfunc embedding model. Its bundle holds the
  state dict (read back with ``torch.load(weights_only=True)``), the ModelConfig, the brain-gradient
  matrix, the robust-scaling statistics and the ROI labels + atlas, so that the same normalisation
  is applied at inference as in training.
* ``log_encoder``: log the bundle in the active run (signature, input example), register a new model
  version tagged and described (atlas, ROIs, frames, TR; steps, dataset, final loss and monitors when
  known: ``training_tags``), move an alias
  (default ``current``; MLflow reserves ``latest``, which is built in as ``models:/name/latest``). The
  registered name says what the model accepts (``encoder_model_name``: ``brainjepa-encoder-<atlas>-<n_rois>``),
  so a run on another atlas never moves the alias that users of this one embed with.
* ``load_encoder``: ``models:/name@alias``, ``models:/name/latest`` or ``runs:/...`` URI -> :class:`EncoderBundle`.

The logged model is "models from code" (a three-line file importing :class:`EncoderModel`), so it
holds no pickle; ``brainjepa`` must be installed wherever it is loaded or served (its requirements name
``brainjepa==<version>``; the source is not copied in as ``code_paths``, see :func:`default_pip_requirements`).

Input contract of the pyfunc (its signature): a float32 tensor ``(-1, n_rois, frames)`` of RAW ROI
time series at the model's frame count (already resampled to its TR); output: float32 embeddings
``(-1, dim)`` mean-pooled over tokens, or ``(batch, n_rois * n_time_patches, dim)`` with
``params={"pooling": "none"}``. MLflow enforces the input's dtype and shape before ``predict`` (a
float64 array is refused: pass float32, or use :meth:`EncoderBundle.embed`, which takes any numbers).
``mlflow models serve -m models:/<name>@current --env-manager local`` serves it; POST
``{"inputs": [[[...]]], "params": {"pooling": "mean"}}`` to ``/invocations``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import mlflow
import numpy as np
import torch
import yaml
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec
from torch import nn

import brainjepa
from brainjepa.config import from_dict, to_dict
from brainjepa.model import BrainEncoder, ModelConfig, state_mismatch
from brainjepa.monitors import LEARNING_MONITORS
from brainjepa.preprocess import RobustStats

_log = logging.getLogger(__name__)

MODEL_NAME_PREFIX = "brainjepa-encoder"
# MLflow reserves the alias "latest" (``models:/name/latest`` is built in: the highest version), so the
# alias that log_encoder moves to each new version is "current": ``models:/brainjepa-encoder-<atlas>-<n_rois>@current``.
# Asking log_encoder for alias "latest" sets no alias (the built-in URI already means that).
DEFAULT_ALIAS = "current"
RESERVED_ALIAS = "latest"
MASK = "***REDACTED***"
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
MAX_TAG_CHARS = 5000  # a model version tag value (MLflow allows 100,000)
PARAMS_PER_BATCH = 100  # MLflow's limit on params per log_batch request

# bundle files (keys of the pyfunc ``artifacts`` mapping = file names without suffix)
STATE_FILE = "encoder_state.pt"
CONFIG_FILE = "model_config.json"
GRADIENTS_FILE = "gradients.npy"
STATS_FILE = "robust_stats.json"
ROIS_FILE = "rois.json"
BUNDLE_FILES = (STATE_FILE, CONFIG_FILE, GRADIENTS_FILE, STATS_FILE, ROIS_FILE)
# "models from code": the logged model holds this file instead of a cloudpickle of EncoderModel, so a
# bundle contains no pickle at all (the weights are read with torch.load(weights_only=True))
MODEL_CODE = (
    "import mlflow\n"
    "from brainjepa_platform.tracking.registry import EncoderModel\n"
    "mlflow.models.set_model(EncoderModel())\n"
)

# values of these variables are masked wherever they appear in a logged value
SECRET_ENV_VARS = (
    "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)
_SECRET_KEY_PARTS = (
    "secret", "password", "passwd", "credential", "access_key", "accesskey", "api_key", "apikey",
    "private_key", "session_token", "auth_token", "access_token", "refresh_token",
)
_SECRET_KEY_WORDS = {"token", "pwd"}


# --- tracking store and experiments ----------------------------------------------------------------
def default_tracking_uri(workdir: str | Path = ".") -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<absolute workdir>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(workdir).expanduser().resolve() / 'mlflow.db'}"


def sqlite_db_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (absolute), else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    raw = unquote(tracking_uri[len("sqlite:///"):].split("?", 1)[0])
    if not raw or raw == ":memory:":
        return None
    return Path(raw).expanduser().resolve()


def default_artifact_location(name: str, tracking_uri: str, artifact_root: str | None = None) -> str | None:
    """``<artifact_root>/<name>``, or ``<dir of the sqlite db>/mlartifacts/<name>``, or None (server decides)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "experiment"
    if artifact_root:
        if "://" in artifact_root:
            return f"{artifact_root.rstrip('/')}/{safe}"
        return (Path(artifact_root).expanduser().resolve() / safe).as_uri()
    db = sqlite_db_path(tracking_uri)
    if db is None:
        return None
    return (db.parent / "mlartifacts" / safe).as_uri()


def ensure_experiment(name: str, tracking_uri: str, artifact_root: str | None = None) -> str:
    """Experiment id of ``name``, creating it (with an absolute artifact location) or restoring it if deleted."""
    db = sqlite_db_path(tracking_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is None:
        location = default_artifact_location(name, tracking_uri, artifact_root)
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:
            found = client.get_experiment_by_name(name)  # another process created it meanwhile
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return found.experiment_id


def configure(experiment: str, tracking_uri: str | None = None, artifact_root: str | None = None) -> str:
    """Point this process's MLflow at ``tracking_uri`` (default: :func:`default_tracking_uri`) and ``experiment``."""
    uri = tracking_uri or default_tracking_uri()
    experiment_id = ensure_experiment(experiment, uri, artifact_root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


# --- params and redaction ----------------------------------------------------------------------------
def _secret_values() -> list[str]:
    return [v for v in (os.environ.get(k) for k in SECRET_ENV_VARS) if v and len(v) >= 4]


def is_secret_key(key: str) -> bool:
    """Whether a (dotted) key names a credential: secret, password, token, access key, AWS_* ..."""
    lowered = str(key).lower()
    if any(part in lowered for part in _SECRET_KEY_PARTS):
        return True
    words = re.split(r"[^a-z0-9]+", lowered)
    return bool(_SECRET_KEY_WORDS.intersection(words)) or any(w.startswith("aws") for w in words if w)


def _mask_url_password(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:***REDACTED***@host``."""
    if "://" not in text or "@" not in text:
        return text
    try:
        parts = urlsplit(text)
        if parts.password is None:
            return text
        netloc = parts.netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return text


def redact_value(value: Any, secrets: list[str] | None = None) -> Any:
    """Mask a value that is or contains a current AWS credential, or a password inside a URL."""
    if isinstance(value, Mapping):
        return redact(value)
    if isinstance(value, (list, tuple)):
        return [redact_value(v, secrets) for v in value]
    if not isinstance(value, str):
        return value
    secrets = _secret_values() if secrets is None else secrets
    if any(s in value for s in secrets):
        return MASK
    return _mask_url_password(value)


def redact(d: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of a (nested) mapping with credential-like keys and credential values masked."""
    secrets = _secret_values()
    out: dict[str, Any] = {}
    for key, value in d.items():
        if is_secret_key(str(key)):
            out[key] = MASK
        elif isinstance(value, Mapping):
            out[key] = redact(value)
        else:
            out[key] = redact_value(value, secrets)
    return out


def _plain(cfg: Any) -> dict[str, Any]:
    if is_dataclass(cfg) and not isinstance(cfg, type):
        return to_dict(cfg)
    if not isinstance(cfg, Mapping):
        raise TypeError(f"expected a mapping or a dataclass config, got {type(cfg).__name__}")
    return dict(cfg)


def _flatten(node: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{dotted}.")
        else:
            yield dotted, value


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def flatten_params(cfg: Mapping[str, Any] | Any) -> dict[str, str]:
    """Nested config (mapping or dataclass) -> redacted ``{"a.b.c": "value"}`` strings, ready for MLflow."""
    flat = redact(dict(_flatten(redact(_plain(cfg)), "")))
    return {key: _param_text(value) for key, value in flat.items()}


def log_params(cfg: Mapping[str, Any] | Any) -> dict[str, str]:
    """Log a config as params of the active run (flattened and redacted); returns what was logged."""
    params = flatten_params(cfg)
    items = list(params.items())
    for start in range(0, len(items), PARAMS_PER_BATCH):
        mlflow.log_params(dict(items[start : start + PARAMS_PER_BATCH]))
    return params


# --- the bundle on disk ------------------------------------------------------------------------------
def _as_numpy(array: Any) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


STATS_MISSING = {"missing": True, "note": "no robust-scaling statistics (an imported checkpoint): embed with "
                                         "--scaling dataset, i.e. the statistics of the data being embedded"}
"""``robust_stats.json`` of a model that came without its pretraining cohort's statistics."""


def _as_stats(stats: RobustStats | Mapping[str, Any] | None) -> RobustStats | None:
    if stats is None or isinstance(stats, RobustStats):
        return stats
    return None if dict(stats).get("missing") else RobustStats.from_dict(dict(stats))


def write_config(cfg: Mapping[str, Any] | Any, path: Path) -> Path:
    """Resolved config -> YAML (redacted)."""
    path.write_text(yaml.safe_dump(redact(_plain(cfg)), sort_keys=False))
    return path


def write_gradients(gradients: Any, path: Path) -> Path:
    np.save(path, _as_numpy(gradients).astype(np.float64), allow_pickle=False)
    return path


def write_stats(stats: RobustStats | Mapping[str, Any] | None, path: Path) -> Path:
    """The statistics as JSON, or :data:`STATS_MISSING` for ``None``."""
    resolved = _as_stats(stats)
    path.write_text(json.dumps(STATS_MISSING if resolved is None else resolved.to_dict()))
    return path


def write_rois(roi_labels: list[str], atlas: str, path: Path, target_tr: float | None = None) -> Path:
    """The input spec: atlas, ROI labels in order and (when known) the TR the model was trained at."""
    path.write_text(json.dumps({"atlas": atlas, "labels": [str(x) for x in roi_labels], "target_tr": target_tr}))
    return path


def target_encoder_state(source: Any) -> dict[str, torch.Tensor]:
    """Target-encoder state dict (on CPU) from a PretrainEngine, BrainJEPA, BrainEncoder or a state dict
    (an engine checkpoint, a BrainJEPA state dict or an encoder state dict)."""
    if hasattr(source, "model") and hasattr(source, "optimizer"):  # PretrainEngine
        source = source.model
    if hasattr(source, "target_encoder"):
        source = source.target_encoder
    if isinstance(source, nn.Module):
        state = source.state_dict()
    elif isinstance(source, Mapping):
        state = dict(source.get("model", source))
        prefix = "target_encoder."
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    else:
        raise TypeError(f"cannot take a target encoder from {type(source).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # a DDP-wrapped module's keys
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _check_state(cfg: ModelConfig, gradients: np.ndarray | None, state: Mapping[str, torch.Tensor]) -> None:
    """The state dict must fit ``BrainEncoder(cfg)`` (checked on the meta device: no memory, no init cost)."""
    grads = None if gradients is None or cfg.positional != "gradient" else torch.from_numpy(gradients).float()
    with torch.device("meta"):
        mismatch = state_mismatch(BrainEncoder(cfg, grads).state_dict(), state)
    if mismatch:
        raise ValueError(
            f"encoder state does not fit the model config ({cfg.size}, dim {cfg.dim}, {cfg.n_rois} ROIs, "
            f"{cfg.frames} frames): missing {mismatch.missing[:5]}, unexpected {mismatch.unexpected[:5]}, "
            f"wrong shape {mismatch.wrong_shape[:5]}"
        )


def _check_bundle(cfg: ModelConfig, gradients: np.ndarray | None, stats: RobustStats | None,
                  roi_labels: list[str]) -> None:
    r = cfg.n_rois
    if len(roi_labels) != r:
        raise ValueError(f"model has {r} ROIs but {len(roi_labels)} ROI labels were given")
    if stats is not None:  # None: an imported model without its cohort's statistics
        if stats.median.shape != (r,) or stats.iqr.shape != (r,):
            raise ValueError(f"robust stats must hold {r} medians and IQRs, got {stats.median.shape} and "
                             f"{stats.iqr.shape}")
        if not np.all(np.isfinite(stats.iqr)) or np.any(stats.iqr <= 0):
            raise ValueError("robust stats: every IQR must be finite and positive")
    if cfg.positional == "gradient":
        shape = None if gradients is None else gradients.shape
        if shape is None or len(shape) != 2 or shape[0] != r or shape[1] < cfg.n_gradients:
            raise ValueError(f"positional=gradient needs a gradients matrix of {r} x >={cfg.n_gradients}, got {shape}")


def write_bundle(
    directory: Path,
    state: Mapping[str, torch.Tensor],
    model_cfg: ModelConfig,
    gradients: Any,
    stats: RobustStats | Mapping[str, Any] | None,
    roi_labels: list[str],
    atlas: str,
    target_tr: float | None = None,
) -> dict[str, str]:
    """Write the five bundle files into ``directory``; returns the pyfunc ``artifacts`` mapping."""
    stats = _as_stats(stats)
    if gradients is None and model_cfg.positional == "gradient":
        gradients = state.get("pos_embed.gradients")  # the buffer the encoder was trained with
    grads = None if gradients is None else _as_numpy(gradients)
    _check_bundle(model_cfg, grads, stats, list(roi_labels))
    _check_state(model_cfg, grads, state)
    torch.save(dict(state), directory / STATE_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(to_dict(model_cfg)))
    write_gradients(grads if grads is not None else np.zeros((model_cfg.n_rois, 0)), directory / GRADIENTS_FILE)
    write_stats(stats, directory / STATS_FILE)
    write_rois(list(roi_labels), atlas, directory / ROIS_FILE, target_tr)
    return {Path(name).stem: str(directory / name) for name in BUNDLE_FILES}


# --- the embedding model -----------------------------------------------------------------------------
@dataclass
class EncoderBundle:
    """A trained target encoder with everything needed to embed raw ROI time series."""

    encoder: BrainEncoder
    config: ModelConfig
    stats: RobustStats | None
    """The pretraining cohort's robust scaling; None for a model imported without it."""
    roi_labels: list[str]
    atlas: str
    gradients: np.ndarray
    target_tr: float | None = None
    """Seconds between the frames the model was pretrained on (None for bundles that did not record it)."""

    def check_series(self, series: Any) -> np.ndarray:
        """Raw input as a float array (B, R, T), or a ValueError naming the expected shape."""
        cfg = self.config
        expected = f"model expects {cfg.n_rois} ROIs (atlas {self.atlas}) x {cfg.frames} frames"
        try:
            array = np.asarray(series, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{expected}: input is not a numeric array ({exc})") from None
        if array.ndim != 3 or array.shape[1:] != (cfg.n_rois, cfg.frames):
            raise ValueError(
                f"{expected}, as an array of shape (batch, {cfg.n_rois}, {cfg.frames}) of raw ROI series "
                f"resampled to the model's TR; got shape {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{expected}: input contains NaN or infinite values")
        return array

    @torch.inference_mode()
    def embed(self, series: Any, pooling: str = "mean", batch_size: int = 32) -> np.ndarray:
        """Raw series (B, R, T) -> robust-scaled -> target encoder -> (B, D) mean-pooled or (B, R*P, D) tokens."""
        if pooling not in ("mean", "none"):
            raise ValueError(f"pooling must be 'mean' or 'none', got {pooling!r}")
        array = self.check_series(series)
        if self.stats is None:
            raise ValueError(f"this model ({self.atlas}) has no robust-scaling statistics of its own (imported "
                             "without --stats): scale with the data's, e.g. brainjepa embed --scaling dataset")
        device = next(self.encoder.parameters()).device
        step = max(1, int(batch_size))
        outputs = []
        for start in range(0, array.shape[0], step):
            chunk = torch.from_numpy(self.stats.scale(array[start : start + step])).to(device)
            tokens = self.encoder(chunk)
            outputs.append((tokens.mean(dim=1) if pooling == "mean" else tokens).float().cpu().numpy())
        if not outputs:
            dim = self.config.dim
            shape = (0, dim) if pooling == "mean" else (0, self.config.n_tokens, dim)
            return np.zeros(shape, dtype=np.float32)
        return np.concatenate(outputs)


def read_bundle(paths: Mapping[str, str], device: str | torch.device = "cpu") -> EncoderBundle:
    """Bundle files (keyed as in :func:`write_bundle`) -> :class:`EncoderBundle` with the encoder in eval mode."""
    cfg = from_dict(ModelConfig, json.loads(Path(paths["model_config"]).read_text()))
    gradients = np.load(paths["gradients"], allow_pickle=False)
    stats = _as_stats(json.loads(Path(paths["robust_stats"]).read_text()))
    rois = json.loads(Path(paths["rois"]).read_text())
    grads = torch.from_numpy(gradients).float() if cfg.positional == "gradient" else None
    encoder = BrainEncoder(cfg, grads)
    state = torch.load(paths["encoder_state"], map_location="cpu", weights_only=True)
    encoder.load_state_dict(state)
    encoder.to(device).eval().requires_grad_(False)
    return EncoderBundle(encoder, cfg, stats, list(rois["labels"]), str(rois["atlas"]), gradients,
                         rois.get("target_tr"))


class EncoderModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: raw ROI series (batch, n_rois, frames) -> embeddings (see the module docstring)."""

    def __init__(self) -> None:
        self.bundle: EncoderBundle | None = None

    def load_context(self, context: Any) -> None:
        self.bundle = read_bundle(context.artifacts)

    # np.ndarray is a hint MLflow leaves alone (no conversion); the signature has MLflow check dtype and shape
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        """Embeddings of ``model_input``; a bad input or param is an MLflow "invalid parameter" error, which a
        model server answers with HTTP 400 and the message (not a 500 with a stack trace)."""
        if self.bundle is None:
            raise RuntimeError("EncoderModel has no bundle: load it with mlflow.pyfunc.load_model")
        params = params or {}
        try:
            return self.bundle.embed(model_input, pooling=str(params.get("pooling") or "mean"),
                                     batch_size=int(params.get("batch_size") or 32))
        except ValueError as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None


def encoder_signature(cfg: ModelConfig) -> ModelSignature:
    """Input: a float32 tensor ``(-1, n_rois, frames)`` of raw ROI series; output: float32 ``(-1, dim)``
    embeddings (``pooling="none"`` returns ``(-1, n_tokens, dim)``; MLflow does not enforce outputs);
    params: ``pooling`` ("mean" | "none") and ``batch_size``. MLflow checks inputs against it (dtype and
    shape, naming the expected shape) before :meth:`EncoderModel.predict` runs."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, cfg.n_rois, cfg.frames))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, cfg.dim))]),
        params=ParamSchema([ParamSpec("pooling", "string", "mean"), ParamSpec("batch_size", "long", 32)]),
    )


def encoder_input_example(cfg: ModelConfig) -> np.ndarray:
    """One all-zero series ``(1, n_rois, frames)``, float32: MLflow saves it as JSON (about 20 bytes a value in
    both files: ~1.4 MB at 450 ROIs x 160 frames) and predicts it through its serving path when logging."""
    return np.zeros((1, cfg.n_rois, cfg.frames), dtype=np.float32)


def default_pip_requirements() -> list[str]:
    """This package at the running version, plus the pins inference needs (MLflow adds its own).

    ``brainjepa`` is not on PyPI: ``--env-manager local`` uses the installed package and installs nothing;
    to rebuild the environment elsewhere (``virtualenv``, ``uv``, ``conda``) make it resolvable, e.g.
    ``pip wheel --no-deps -w wheels .`` then ``PIP_FIND_LINKS=wheels``. The source is not logged as
    ``code_paths``: MLflow would put that copy first on ``sys.path`` of every process loading the model,
    so modules imported afterwards would come from a model's snapshot instead of the installed package."""
    return [f"brainjepa=={brainjepa_version()}", f"torch=={torch.__version__.split('+')[0]}",
            f"numpy=={np.__version__}", f"pyyaml=={yaml.__version__}"]


def training_tags(steps: int | None = None, dataset: str | None = None,
                  metrics: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Version tags of a pretrained encoder: ``steps``, ``dataset`` (URI) and ``final.<name>`` for the loss,
    validation loss and learning/collapse monitors in ``metrics`` (the run's last report); unknown ones are
    None, which :func:`encoder_version_tags` leaves out."""
    metrics = metrics or {}
    names = ("loss", "val_loss", *LEARNING_MONITORS)
    return {"steps": steps, "dataset": dataset, **{f"final.{name}": metrics.get(name) for name in names}}


def _known(value: Any) -> bool:
    return value is not None and value != "" and not (isinstance(value, (float, np.floating)) and np.isnan(value))


def _tag_text(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(redact_value(str(value)))[:MAX_TAG_CHARS]


def encoder_version_tags(cfg: ModelConfig, atlas: str, target_tr: float | None,
                         extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Registry tags of an encoder version: what it accepts (atlas, n_rois, frames, target_tr), what it is
    (size, dim, patch, positional, brainjepa version), then ``extra`` (e.g. :func:`training_tags`); None
    and NaN values are left out, every value is a redacted string."""
    tags = {"atlas": atlas, "n_rois": cfg.n_rois, "frames": cfg.frames, "target_tr": target_tr, "patch": cfg.patch,
            "model_size": cfg.size, "dim": cfg.dim, "positional": cfg.positional,
            "brainjepa_version": brainjepa_version(), **dict(extra or {})}
    return {str(key): _tag_text(value) for key, value in tags.items() if _known(value)}


def encoder_description(cfg: ModelConfig, atlas: str, target_tr: float | None, tags: Mapping[str, str],
                        model_uri: str) -> str:
    """A version's description: input and output, training (steps, dataset, final loss) when tagged, how to serve."""
    tr = f" at TR {target_tr:g} s" if target_tr else ""
    text = (f"Brain-JEPA target encoder ({cfg.size}, dim {cfg.dim}, {cfg.positional} positions), atlas {atlas}: "
            f"raw ROI series, float32 (batch, {cfg.n_rois} ROIs, {cfg.frames} frames{tr}) -> (batch, {cfg.dim}) "
            "embeddings; params pooling ('mean' | 'none'), batch_size.")
    if "steps" in tags or "dataset" in tags:
        text += f" Pretrained {tags.get('steps', '?')} steps on {tags.get('dataset', '?')}"
        text += f", final loss {tags['final.loss']}." if "final.loss" in tags else "."
    return text + f" Serve: mlflow models serve -m {model_uri} --env-manager local (brainjepa installed)."


def describe_version(registered_name: str, version: str, tags: Mapping[str, str], description: str) -> None:
    """Set the tags and the (redacted) description of a registered model version."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version, key, value)
    client.update_model_version(registered_name, version, description=str(redact_value(description)))


# --- logging and registry ----------------------------------------------------------------------------
def _require_active_run() -> mlflow.ActiveRun:
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: call this inside mlflow.start_run() (rank 0 only)")
    return run


def log_encoder(
    engine_or_state: Any,
    model_cfg: ModelConfig,
    gradients: Any,
    stats: RobustStats | Mapping[str, Any] | None,
    roi_labels: list[str],
    atlas: str,
    registered_name: str | None = None,
    alias: str | None = DEFAULT_ALIAS,
    extra_artifacts: Mapping[str, str | Path] | None = None,
    name: str = "encoder",
    step: int = 0,
    pip_requirements: list[str] | None = None,
    target_tr: float | None = None,
    version_tags: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> str:
    """Log the target encoder as a pyfunc in the active run, register a new version of
    ``registered_name`` (default: ``encoder_model_name(atlas, model_cfg.n_rois)``), tag and describe it
    (:func:`encoder_version_tags` with ``version_tags``, e.g. :func:`training_tags`; ``description``
    replaces :func:`encoder_description`), point ``alias`` at it and return the version (a string)."""
    run = _require_active_run()
    registered_name = registered_name or encoder_model_name(atlas, model_cfg.n_rois)
    extra = {str(k): str(v) for k, v in (extra_artifacts or {}).items()}
    clash = set(extra) & {Path(n).stem for n in BUNDLE_FILES}
    if clash:
        raise ValueError(f"extra_artifacts keys {sorted(clash)} clash with the encoder bundle's files")
    with tempfile.TemporaryDirectory(prefix="brainjepa-encoder-") as tmp:
        artifacts = write_bundle(
            Path(tmp), target_encoder_state(engine_or_state), model_cfg, gradients, stats, roi_labels, atlas, target_tr
        )
        code = Path(tmp) / "brainjepa_encoder_model.py"
        code.write_text(MODEL_CODE)
        metadata = {"atlas": atlas, "brainjepa_version": brainjepa_version(), "run_id": run.info.run_id}
        # no example for a model without scaling statistics: its predict refuses every input
        example = None if _as_stats(stats) is None else encoder_input_example(model_cfg)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=str(code),
                artifacts={**artifacts, **extra},
                signature=encoder_signature(model_cfg),
                input_example=example,
                pip_requirements=pip_requirements or default_pip_requirements(),
                registered_model_name=registered_name,
                metadata=metadata,
                step=step,
            )
    version = str(info.registered_model_version)
    tags = encoder_version_tags(model_cfg, atlas, target_tr, version_tags)
    describe_version(registered_name, version, tags, description or encoder_description(
        model_cfg, atlas, target_tr, tags, f"models:/{registered_name}/{version}"))
    set_alias(registered_name, alias, version)
    return version


def encoder_model_name(atlas: str, n_rois: int) -> str:
    """Registered-model name of encoders that take ``n_rois`` ROIs of ``atlas``:
    ``brainjepa-encoder-<atlas>-<n_rois>``, the atlas reduced to letters, digits, ``.``, ``_`` and ``-``
    (MLflow refuses ``/``, ``:`` and ``%`` in names)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", str(atlas)).strip("-.")[:100] or "unnamed"
    return f"{MODEL_NAME_PREFIX}-{safe}-{int(n_rois)}"


def set_alias(registered_name: str, alias: str | None, version: str) -> None:
    """Point ``alias`` at ``version``; "latest" (reserved by MLflow, and built in as models:/name/latest) is skipped."""
    if not alias:
        return
    if alias.lower() == RESERVED_ALIAS:
        _log.info("alias 'latest' is built into MLflow: models:/%s/latest already resolves to version %s",
                  registered_name, version)
        return
    MlflowClient().set_registered_model_alias(registered_name, alias, version)


def brainjepa_version() -> str:
    return str(getattr(brainjepa, "__version__", "unknown"))


def log_run_artifacts(
    config: Mapping[str, Any] | Any | None = None,
    gradients: Any = None,
    stats: RobustStats | Mapping[str, Any] | None = None,
    roi_labels: list[str] | None = None,
    atlas: str | None = None,
    artifact_path: str = "run",
) -> list[str]:
    """Log the resolved config (YAML, redacted), gradients (npy), robust stats and ROI labels (json) as
    artifacts of the active run under ``artifact_path``; returns the file names logged."""
    _require_active_run()
    with tempfile.TemporaryDirectory(prefix="brainjepa-run-") as tmp:
        d = Path(tmp)
        files = []
        if config is not None:
            files.append(write_config(config, d / "config.yaml"))
        if gradients is not None:
            files.append(write_gradients(gradients, d / GRADIENTS_FILE))
        if stats is not None:
            files.append(write_stats(stats, d / STATS_FILE))
        if roi_labels is not None:
            files.append(write_rois(list(roi_labels), atlas or "unknown", d / ROIS_FILE))
        for path in files:
            mlflow.log_artifact(str(path), artifact_path=artifact_path)
        return [p.name for p in files]


def resolve_model_uri(model_uri: str) -> str:
    """``models:/name@latest`` (an alias MLflow cannot hold) -> ``models:/name/latest``; other URIs unchanged."""
    match = re.fullmatch(r"models:/([^/@]+)@latest", model_uri, flags=re.IGNORECASE)
    return f"models:/{match.group(1)}/latest" if match else model_uri


def load_encoder(model_uri: str, device: str | torch.device = "cpu") -> EncoderBundle:
    """``models:/brainjepa-encoder-<atlas>-<n_rois>@current``, ``models:/name/latest`` (or ``@latest``),
    ``models:/name/3`` or ``runs:/<run id>/encoder`` -> :class:`EncoderBundle` (encoder in eval mode on ``device``)."""
    model = mlflow.pyfunc.load_model(resolve_model_uri(model_uri)).unwrap_python_model()
    if not isinstance(model, EncoderModel) or model.bundle is None:
        raise ValueError(f"{model_uri} is not a brainjepa encoder model (got {type(model).__name__})")
    bundle = model.bundle
    if torch.device(device) != torch.device("cpu"):
        bundle.encoder.to(device)
    return bundle


def check_tracking_uri(tracking_uri: str | None = None, timeout: float = 10.0) -> str:
    """Fail fast, naming the URI, when the tracking store cannot be used (before any Ray work: MLflow's
    own client retries for minutes). An ``http(s)://`` server must answer ``GET <uri>/health`` within
    ``timeout`` seconds (any HTTP status is an answer); a ``sqlite:///`` database or a ``file:``/path
    store needs a folder this process can write. Other schemes are left to MLflow. Returns the URI."""
    import urllib.error
    import urllib.request

    from brainjepa_platform.errors import UserError

    uri = tracking_uri or default_tracking_uri()
    shown, scheme = _mask_url_password(uri), urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
                return uri
        except urllib.error.HTTPError:
            return uri  # the server answered
        except (OSError, ValueError) as exc:  # refused, unresolvable, no answer within the timeout
            reason = getattr(exc, "reason", None) or exc or type(exc).__name__
            raise UserError(f"MLflow tracking server {shown} cannot be reached ({reason}, {timeout:g} s "
                            "timeout): start it, or set MLFLOW_TRACKING_URI / tracking.tracking_uri") from None
    if scheme in ("sqlite", "file", "") or len(scheme) == 1:  # one letter: a Windows drive
        if scheme == "sqlite":
            database = sqlite_db_path(uri)
            if database is None:
                return uri  # in-memory
            folder = database.parent
        else:
            database, folder = None, Path(unquote(urlsplit(uri).path) if scheme == "file" else uri).expanduser()
        while not folder.exists() and folder != folder.parent:  # the folder MLflow would create
            folder = folder.parent
        if not (folder.is_dir() and os.access(folder, os.W_OK)):
            raise UserError(f"MLflow tracking store {shown}: {folder} is not a writable folder; set "
                            "MLFLOW_TRACKING_URI / tracking.tracking_uri")
        if database is not None and database.exists() and not (database.is_file() and os.access(database, os.W_OK)):
            raise UserError(f"MLflow tracking store {shown}: {database} is not a writable file")
    return uri
