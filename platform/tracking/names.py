"""Registered-model names and aliases of Brain-JEPA encoders (no MLflow import: Ray Data code names models too).

The registered name says what a model accepts (``brainjepa-encoder-<atlas>-<n_rois>``), so a run on
another atlas never moves the alias that users of this one embed with.
"""

from __future__ import annotations

import re

MODEL_NAME_PREFIX = "brainjepa-encoder"
# MLflow reserves the alias "latest" (``models:/name/latest`` is built in: the highest version), so the
# alias that log_encoder moves to each new version is "current": ``models:/brainjepa-encoder-<atlas>-<n_rois>@current``.
# Asking log_encoder for alias "latest" sets no alias (the built-in URI already means that).
DEFAULT_ALIAS = "current"
RESERVED_ALIAS = "latest"


def encoder_model_name(atlas: str, n_rois: int) -> str:
    """Registered-model name of encoders that take ``n_rois`` ROIs of ``atlas``:
    ``brainjepa-encoder-<atlas>-<n_rois>``, the atlas reduced to letters, digits, ``.``, ``_`` and ``-``
    (MLflow refuses ``/``, ``:`` and ``%`` in names)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", str(atlas)).strip("-.")[:100] or "unnamed"
    return f"{MODEL_NAME_PREFIX}-{safe}-{int(n_rois)}"
