"""Tracking stage: MLflow runs, the encoder bundle and the model registry.

Models logged before the package split import ``EncoderModel`` from ``brainjepa_platform.tracking``
(their "models from code" file); it is resolved lazily so that importing the package's bundle module
does not import MLflow.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "EncoderModel":
        from brainjepa_platform.tracking.registry import EncoderModel

        return EncoderModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
