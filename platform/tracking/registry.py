"""The MLflow model registry of Brain-JEPA encoders (docs/registry.md; the method: docs/method.md).

* ``EncoderModel``: the target encoder as an MLflow pyfunc embedding model around an
  :class:`~brainjepa_platform.tracking.bundle.EncoderBundle`.
* ``log_encoder``: log the bundle in the active run (signature, input example), register a new model
  version tagged and described (atlas, ROIs, frames, TR; steps, dataset, final loss and monitors when
  known: ``training_tags``), move an alias
  (default ``current``; MLflow reserves ``latest``, which is built in as ``models:/name/latest``) under
  the name of what the model accepts (:mod:`brainjepa_platform.tracking.names`).
* ``log_run_artifacts``: the resolved config, gradients, statistics and ROI labels of the active run.
* ``load_encoder``: ``models:/name@alias``, ``models:/name/latest`` or ``runs:/...`` URI -> :class:`EncoderBundle`.

The tracking store and experiments are :mod:`brainjepa_platform.tracking.store`; params and redaction
:mod:`brainjepa_platform.tracking.params`; the bundle files :mod:`brainjepa_platform.tracking.bundle`;
model names and aliases :mod:`brainjepa_platform.tracking.names`.
Functions that log (``log_encoder``, ``log_run_artifacts``) work in the active run of MLflow's fluent
API, so in the tracking store of the process; registry calls go through an ``MlflowClient`` of that URI.

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

import logging
import re
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
import yaml
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

import brainjepa
from brainjepa.model import ModelConfig
from brainjepa.monitors import LEARNING_MONITORS
from brainjepa.preprocess import RobustStats
from brainjepa_platform.tracking.bundle import (
    BUNDLE_FILES,
    GRADIENTS_FILE,
    ROIS_FILE,
    STATS_FILE,
    EncoderBundle,
    as_stats,
    read_bundle,
    target_encoder_state,
    write_bundle,
    write_config,
    write_gradients,
    write_rois,
    write_stats,
)
from brainjepa_platform.tracking.names import DEFAULT_ALIAS, RESERVED_ALIAS, encoder_model_name
from brainjepa_platform.tracking.params import redact_value

_log = logging.getLogger(__name__)

MAX_TAG_CHARS = 5000  # a model version tag value (MLflow allows 100,000)
# "models from code": the logged model holds this file instead of a cloudpickle of EncoderModel, so a
# bundle contains no pickle at all (the weights are read with torch.load(weights_only=True))
MODEL_CODE = (
    "import mlflow\n"
    "from brainjepa_platform.tracking.registry import EncoderModel\n"
    "mlflow.models.set_model(EncoderModel())\n"
)


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
            return self.bundle.embed(
                model_input,
                pooling=str(params.get("pooling") or "mean"),
                batch_size=int(params.get("batch_size") or 32),
            )
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
    return [
        f"brainjepa=={brainjepa_version()}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"numpy=={np.__version__}",
        f"pyyaml=={yaml.__version__}",
    ]


def training_tags(
    steps: int | None = None, dataset: str | None = None, metrics: Mapping[str, Any] | None = None
) -> dict[str, Any]:
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


def encoder_version_tags(
    cfg: ModelConfig, atlas: str, target_tr: float | None, extra: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Registry tags of an encoder version: what it accepts (atlas, n_rois, frames, target_tr), what it is
    (size, dim, patch, positional, brainjepa version), then ``extra`` (e.g. :func:`training_tags`); None
    and NaN values are left out, every value is a redacted string."""
    tags = {
        "atlas": atlas,
        "n_rois": cfg.n_rois,
        "frames": cfg.frames,
        "target_tr": target_tr,
        "patch": cfg.patch,
        "model_size": cfg.size,
        "dim": cfg.dim,
        "positional": cfg.positional,
        "brainjepa_version": brainjepa_version(),
        **dict(extra or {}),
    }
    return {str(key): _tag_text(value) for key, value in tags.items() if _known(value)}


def encoder_description(
    cfg: ModelConfig, atlas: str, target_tr: float | None, tags: Mapping[str, str], model_uri: str
) -> str:
    """A version's description: input and output, training (steps, dataset, final loss) when tagged, how to serve."""
    tr = f" at TR {target_tr:g} s" if target_tr else ""
    text = (
        f"Brain-JEPA target encoder ({cfg.size}, dim {cfg.dim}, {cfg.positional} positions), atlas {atlas}: "
        f"raw ROI series, float32 (batch, {cfg.n_rois} ROIs, {cfg.frames} frames{tr}) -> (batch, {cfg.dim}) "
        "embeddings; params pooling ('mean' | 'none'), batch_size."
    )
    if "steps" in tags or "dataset" in tags:
        text += f" Pretrained {tags.get('steps', '?')} steps on {tags.get('dataset', '?')}"
        text += f", final loss {tags['final.loss']}." if "final.loss" in tags else "."
    return text + f" Serve: mlflow models serve -m {model_uri} --env-manager local (brainjepa installed)."


def describe_version(
    registered_name: str, version: str, tags: Mapping[str, str], description: str, tracking_uri: str | None = None
) -> None:
    """Set the tags and the (redacted) description of a registered model version (in the registry of
    ``tracking_uri``; default: the process's)."""
    client = MlflowClient(tracking_uri)
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
        example = None if as_stats(stats) is None else encoder_input_example(model_cfg)
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
    tracking_uri = mlflow.get_tracking_uri()  # the store the active run logs to
    tags = encoder_version_tags(model_cfg, atlas, target_tr, version_tags)
    describe_version(
        registered_name,
        version,
        tags,
        description or encoder_description(model_cfg, atlas, target_tr, tags, f"models:/{registered_name}/{version}"),
        tracking_uri,
    )
    set_alias(registered_name, alias, version, tracking_uri)
    return version


def set_alias(registered_name: str, alias: str | None, version: str, tracking_uri: str | None = None) -> None:
    """Point ``alias`` at ``version`` (in the registry of ``tracking_uri``; default: the process's); "latest"
    (reserved by MLflow, and built in as models:/name/latest) is skipped."""
    if not alias:
        return
    if alias.lower() == RESERVED_ALIAS:
        _log.info(
            "alias 'latest' is built into MLflow: models:/%s/latest already resolves to version %s",
            registered_name,
            version,
        )
        return
    MlflowClient(tracking_uri).set_registered_model_alias(registered_name, alias, version)


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
