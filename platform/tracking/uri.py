"""MLflow's fluent API (``mlflow.start_run``, ``mlflow.pyfunc.log_model``) reads a process-wide tracking URI.
Library code that needs it sets the URI for a block only: :func:`using_tracking_uri`. Everything else takes
an explicit ``MlflowClient(tracking_uri)``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import mlflow

ENV = "MLFLOW_TRACKING_URI"


@contextlib.contextmanager
def using_tracking_uri(uri: str) -> Iterator[str]:
    """MLflow's process-wide tracking URI is ``uri`` inside the block and what it was before afterwards
    (``mlflow.set_tracking_uri`` also sets the ``MLFLOW_TRACKING_URI`` variable: that is put back too).
    Not for concurrent use from several threads: the URI is the process's."""
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    previous_env = os.environ.get(ENV)
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        mlflow.set_tracking_uri(previous)  # None: back to MLflow's default
        if previous_env is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous_env
