"""How a ``brainjepa`` command ends: exit statuses and one-line messages for user errors.

Exit statuses: 0 done, 2 error (one line on stderr), 3 done with some inputs quarantined (``ingest``),
130 interrupted (Ctrl-C; the same command resumes), 141 the reader of the output went away
(``brainjepa dataset info X | head -1``: nothing printed, as a shell reports for a closed pipe).

A *user error* is a problem with what the user gave or with their environment: a bad config value or
YAML, a path that does not exist or cannot be written, a model URI the registry does not know, a
store or tracking server that cannot be reached. It ends in one line naming the file, field or URI.
Anything else (TypeError, AttributeError, KeyError, ...: a bug in this code) keeps its traceback.
``--debug`` or ``BRAINJEPA_DEBUG=1`` prints the traceback of user errors too.
"""

from __future__ import annotations

import os
import sys

import yaml

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports after Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
DEBUG_ENV = "BRAINJEPA_DEBUG"
# MLflow error codes that mean "you asked for something that is not there"
MLFLOW_USER_CODES = ("RESOURCE_DOES_NOT_EXIST",)


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line (exit status 2)."""


def debug_enabled() -> bool:
    """True when ``BRAINJEPA_DEBUG`` is set to anything but an empty string, 0, false or no."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _yaml_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"malformed YAML: {_one_line(problem)}"
    source = "" if mark.name.startswith("<") else f"{mark.name}, "
    return f"malformed YAML: {_one_line(problem)} ({source}line {mark.line + 1}, column {mark.column + 1})"


def _os_message(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        other = f" -> {exc.filename2}" if exc.filename2 is not None else ""
        return f"{exc.filename}{other}: {exc.strerror[0].lower()}{exc.strerror[1:]}"
    return _one_line(str(exc)) or type(exc).__name__


def _mlflow_message(exc: BaseException) -> str | None:
    errors = sys.modules.get("mlflow.exceptions")
    if errors is None or not isinstance(exc, errors.MlflowException):
        return None
    if exc.error_code not in MLFLOW_USER_CODES:
        return None
    import mlflow

    return f"{_one_line(exc.message)} (MLflow tracking URI {mlflow.get_tracking_uri()})"


def _remote_cause(exc: BaseException) -> BaseException | None:
    """The user's exception inside a Ray wrapper (RayTaskError, TrainingFailedError, ...), if any."""
    if not type(exc).__module__.startswith("ray."):
        return None
    cause = getattr(exc, "cause", None) or exc.__cause__
    return cause if isinstance(cause, BaseException) and cause is not exc else None


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message of a user error, or None when ``exc`` is not one (a bug: keep its traceback)."""
    cause = _remote_cause(exc)
    if cause is not None:
        return user_error_message(cause)
    if isinstance(exc, yaml.YAMLError):
        return _yaml_message(exc)
    mlflow_message = _mlflow_message(exc)
    if mlflow_message is not None:
        return mlflow_message
    if isinstance(exc, OSError):
        return _os_message(exc)
    if isinstance(exc, UserError | ValueError) or _defined_here(type(exc)):
        return _one_line(str(exc)) or type(exc).__name__
    return None


def _defined_here(cls: type) -> bool:
    """Error classes of this project (ConfigError, StorageError, BadInput, ...) are user errors; a bare
    RuntimeError, TypeError, KeyError, ... is a bug."""
    return cls.__module__.split(".")[0] in ("brainjepa", "brainjepa_platform")
