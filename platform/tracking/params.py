"""Configs as MLflow params: flattened to dotted keys, with anything that looks like a credential masked.

Nothing reaches MLflow without going through :func:`redact`. MLflow itself is imported only by
:func:`log_params`, so the bundle writer (and Ray Data actors) can redact without importing it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import is_dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from brainjepa.config import flatten, to_dict

MASK = "***REDACTED***"
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
PARAMS_PER_BATCH = 100  # MLflow's limit on params per log_batch request

# values of these variables are masked wherever they appear in a logged value
SECRET_ENV_VARS = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)
_SECRET_KEY_PARTS = (
    "secret",
    "password",
    "passwd",
    "credential",
    "access_key",
    "accesskey",
    "api_key",
    "apikey",
    "private_key",
    "session_token",
    "auth_token",
    "access_token",
    "refresh_token",
)
_SECRET_KEY_WORDS = {"token", "pwd"}


def _secret_values() -> list[str]:
    return [v for v in (os.environ.get(k) for k in SECRET_ENV_VARS) if v and len(v) >= 4]


def is_secret_key(key: str) -> bool:
    """Whether a (dotted) key names a credential: secret, password, token, access key, AWS_* ..."""
    lowered = str(key).lower()
    if any(part in lowered for part in _SECRET_KEY_PARTS):
        return True
    words = re.split(r"[^a-z0-9]+", lowered)
    return bool(_SECRET_KEY_WORDS.intersection(words)) or any(w.startswith("aws") for w in words if w)


def mask_url_password(text: str) -> str:
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
    return mask_url_password(value)


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


def plain_config(cfg: Any) -> dict[str, Any]:
    """A dataclass config or a mapping as a plain dict."""
    if is_dataclass(cfg) and not isinstance(cfg, type):
        return to_dict(cfg)
    if not isinstance(cfg, Mapping):
        raise TypeError(f"expected a mapping or a dataclass config, got {type(cfg).__name__}")
    return dict(cfg)


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def flatten_params(cfg: Mapping[str, Any] | Any) -> dict[str, str]:
    """Nested config (mapping or dataclass) -> redacted ``{"a.b.c": "value"}`` strings, ready for MLflow."""
    flat = redact(flatten(redact(plain_config(cfg))))
    return {key: _param_text(value) for key, value in flat.items()}


def log_params(cfg: Mapping[str, Any] | Any) -> dict[str, str]:
    """Log a config as params of the active run (flattened and redacted); returns what was logged."""
    import mlflow

    params = flatten_params(cfg)
    items = list(params.items())
    for start in range(0, len(items), PARAMS_PER_BATCH):
        mlflow.log_params(dict(items[start : start + PARAMS_PER_BATCH]))
    return params
