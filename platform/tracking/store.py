"""The MLflow tracking store and experiments: where runs and models are recorded.

* ``default_tracking_uri``: ``MLFLOW_TRACKING_URI`` or a sqlite database in the working directory.
* ``ensure_experiment``: an experiment with an absolute artifact location (Ray workers change directory),
  through an explicit ``MlflowClient(tracking_uri)``.
* ``check_tracking_uri``: fail fast, naming the URI, before any Ray work when the store cannot be used.

Nothing here changes process-wide MLflow state; code that needs MLflow's fluent API (``mlflow.start_run``,
``mlflow.pyfunc.log_model``) sets the URI for a block with :func:`brainjepa_platform.tracking.uri.using_tracking_uri`
and passes the experiment id to ``mlflow.start_run``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from brainjepa_platform.tracking.params import mask_url_password


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
    raw = unquote(tracking_uri[len("sqlite:///") :].split("?", 1)[0])
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


def check_tracking_uri(tracking_uri: str | None = None, timeout: float = 10.0) -> str:
    """Fail fast, naming the URI, when the tracking store cannot be used (before any Ray work: MLflow's
    own client retries for minutes). An ``http(s)://`` server must answer ``GET <uri>/health`` within
    ``timeout`` seconds (any HTTP status is an answer); a ``sqlite:///`` database or a ``file:``/path
    store needs a folder this process can write. Other schemes are left to MLflow. Returns the URI."""
    import urllib.error
    import urllib.request

    from brainjepa_platform.errors import UserError

    uri = tracking_uri or default_tracking_uri()
    shown, scheme = mask_url_password(uri), urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
                return uri
        except urllib.error.HTTPError:
            return uri  # the server answered
        except (OSError, ValueError) as exc:  # refused, unresolvable, no answer within the timeout
            reason = getattr(exc, "reason", None) or exc or type(exc).__name__
            raise UserError(
                f"MLflow tracking server {shown} cannot be reached ({reason}, {timeout:g} s "
                "timeout): start it, or set MLFLOW_TRACKING_URI / tracking.tracking_uri"
            ) from None
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
            raise UserError(
                f"MLflow tracking store {shown}: {folder} is not a writable folder; set "
                "MLFLOW_TRACKING_URI / tracking.tracking_uri"
            )
        if database is not None and database.exists() and not (database.is_file() and os.access(database, os.W_OK)):
            raise UserError(f"MLflow tracking store {shown}: {database} is not a writable file")
    return uri
