"""How a ``brainjepa`` command process talks and ends: its log lines on stderr (``--log-level``), the one
line an interrupted command prints (what it kept, how to go on), and a closed output pipe (``| head``)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import select
import sys
from collections.abc import Callable
from typing import Any

from brainjepa.config import to_dict

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_HANDLER = "brainjepa-cli"


class _StderrHandler(logging.StreamHandler):
    """To whatever ``sys.stderr`` is when a line is logged (not the stream of when the handler was made)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: str, command: str) -> Callable[[], None]:
    """Log lines of brainjepa's own loggers (``brainjepa``, ``brainjepa_platform``) go to stderr from ``level``
    on, for one command; other libraries' logging stays as they set it. Returns the function that puts the
    loggers back as they were (``main`` calls it when the command ends, so a ``main()`` called in-process,
    e.g. from a notebook or a test, leaves no handler or level behind)."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(f"brainjepa {command}: %(levelname)s: %(message)s"))
    handler.set_name(LOG_HANDLER)
    loggers = [logging.getLogger(name) for name in ("brainjepa", "brainjepa_platform")]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(level)

    def restore() -> None:
        for logger, old_level in zip(loggers, previous):
            logger.removeHandler(handler)
            logger.setLevel(old_level)

    return restore


# What an interrupted command leaves behind (``{name}`` are its arguments); commands that know more
# (pretrain, sweep) set ``args.on_interrupt`` themselves once their config is read.
ON_INTERRUPT = {
    "ingest": "chunks finished so far are kept in {out}; the same command redoes only the rest",
    "demo": "finished steps are recorded in {out}/demo-state.json; the same command goes on from there",
    "synth": "{out} may be unfinished; run the same command again, with --overwrite",
}
NOTHING_KEPT = "its outputs are written at the end, so nothing was kept; run the same command again"


def command_name(args: argparse.Namespace) -> str:
    """``ingest``, ``dataset info``, ``bench step``, ``submit pretrain``, ..."""
    sub = getattr(args, "dataset_cmd", None) or getattr(args, "bench", None) or getattr(args, "kind", None)
    return f"{args.command} {sub}" if sub else args.command


def interrupted_message(args: argparse.Namespace) -> str:
    """One line: where the command stopped, what is on disk, how to go on."""
    options = getattr(args, "options", None)  # a command's resolved options (``out``, ...)
    fields = {**vars(args), **(to_dict(options) if dataclasses.is_dataclass(options) else {})}
    note = getattr(args, "on_interrupt", None) or ON_INTERRUPT.get(args.command, NOTHING_KEPT).format(**fields)
    return f"brainjepa {command_name(args)}: interrupted (Ctrl-C); {note}"


def stdout_closed() -> bool:
    """Whether the reader of stdout went away (``| head``), rather than some other pipe or socket breaking."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() (Windows) or no real stdout
        return True


def close_stdout() -> None:
    """Send whatever is still buffered for the departed reader nowhere (no error at exit)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
