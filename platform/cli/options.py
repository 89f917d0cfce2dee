"""One convention for every command's options: a typed dataclass filled from ``--config FILE`` (YAML), then
the command's flags (shortcuts for the keys typed every time), then ``key=value`` overrides (the last word),
through :func:`brainjepa.config.load_config`; ``--print-config`` prints the resolved options as YAML.

A flag is declared with :func:`shortcut`: its value lands in the namespace under ``option:<dotted key>`` only
when it is given, so a flag left out never hides a value of the config file.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import yaml

from brainjepa.config import flatten, load_config, read_yaml_with_extends, to_dict
from brainjepa_platform.config_files import config_argument

T = TypeVar("T")
SHORTCUT = "option:"
COMMANDS = "brainjepa_platform.cli.commands"
"""The module of the commands' option dataclasses."""
EPILOG = (
    "Any option: key=value (or in --config FILE, YAML); flags are shortcuts for the keys typed every time. "
    "--print-config prints the resolved options and exits."
)
Loader = Callable[[Any, list[str], dict[str, Any]], Any]
"""``(config file or None, key=value overrides, flag values by dotted key) -> options``."""


def shortcut(p: argparse.ArgumentParser, *flags: str, key: str, **kwargs: Any) -> argparse.Action:
    """A flag (``--out``) for the option ``key`` (``out``, ``clean.high_pass``); set only when given."""
    if "action" not in kwargs and "choices" not in kwargs:
        kwargs.setdefault("metavar", flags[-1].lstrip("-").replace("-", "_").upper())  # as argparse names it
    return p.add_argument(*flags, dest=SHORTCUT + key, default=argparse.SUPPRESS, **kwargs)


def comma_separated(text: str) -> tuple[str, ...]:
    """``type=`` of a list flag: ``a,b`` -> ``("a", "b")``."""
    return tuple(c for c in text.split(",") if c)


def given_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given on the command line, by dotted option key (positional arguments included)."""
    return {k.removeprefix(SHORTCUT): v for k, v in vars(args).items() if k.startswith(SHORTCUT)}


def keys_given(args: argparse.Namespace) -> set[str]:
    """Dotted keys set by the config file, a flag or an override (rather than left at their defaults)."""
    keys = set(flatten(read_yaml_with_extends(Path(args.config)))) if args.config is not None else set()
    keys |= set(given_flags(args))
    return keys | {item.split("=", 1)[0].strip() for item in args.overrides}


def base_options(opts: Any, base: type[T]) -> T:
    """A command's options (a subclass adding the command's own keys) as the library's ``base`` dataclass."""
    return base(**{f.name: getattr(opts, f.name) for f in dataclasses.fields(base) if f.init})


def run_command(load: Loader, run: Callable[[Any, argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Resolve the options (or print them, ``--print-config``) and run the command with them."""
    opts = load(args.config, list(args.overrides), given_flags(args))
    if args.print_config:
        print(yaml.safe_dump(to_dict(opts), sort_keys=False), end="")
        return 0
    args.options = opts
    return run(opts, args)


def options_class(ref: str) -> type:
    """``"IngestCommand"`` (a class of :mod:`brainjepa_platform.cli.commands`), ``"demo:DemoOptions"`` (of a
    module of this package) or ``"package.module:Name"`` -> the class, imported when a command runs, so that
    ``brainjepa --help`` and light commands import no pandas, torch or Ray."""
    module, _, name = ref.rpartition(":")
    module = module if "." in module else f"{__package__}.{module}" if module else COMMANDS
    return getattr(importlib.import_module(module), name)


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    cls: str | None,
    run: Callable[[Any, argparse.Namespace], int],
    *,
    help: str,
    positionals: tuple[tuple[str, str], ...] = (),
    config_default: str | None = None,
    load: Loader | None = None,
    overrides_help: str = "",
    **parser_kwargs: Any,
) -> argparse.ArgumentParser:
    """A subcommand whose options are the dataclass ``cls`` (see :func:`options_class`) or what ``load``
    returns: ``--config FILE``, ``--print-config``, the ``positionals`` (``(key, help)``, before the overrides)
    and ``key=value`` overrides; the command's flags are added by the caller with :func:`shortcut`."""
    epilog = "\n".join(e for e in (parser_kwargs.pop("epilog", ""), EPILOG) if e)
    p = sub.add_parser(name, help=help, epilog=epilog, **parser_kwargs)
    what = cls.rpartition(":")[2] if cls is not None else "options"
    p.add_argument(
        "--config",
        type=config_argument,
        default=config_default,
        metavar="FILE",
        help=f"YAML file of {what} (a path, or a built-in name such as pretrain/tiny)"
        + (f"; default {config_default}" if config_default else ""),
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved options as YAML and exit")
    for key, text in positionals:
        p.add_argument(SHORTCUT + key, metavar=key.upper(), help=text)
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help=overrides_help or f"any option of {what} (see --print-config)"
    )
    p.set_defaults(func=partial(run_command, load or partial(_load, cls), run))
    return p


def _load(cls: str, config: Any, overrides: list[str], values: dict[str, Any]) -> Any:
    return load_config(options_class(cls), config, overrides, values)
