"""One convention for every command's options: a typed dataclass filled from ``--config FILE`` (YAML), then
the command's flags (shortcuts for the keys typed every time), then ``key=value`` overrides (the last word),
through :func:`brainjepa.config.load_config`; ``--print-config`` prints the resolved options as YAML.

A flag is declared with :func:`shortcut`: its value lands in the namespace under ``option:<dotted key>`` only
when it is given, so a flag left out never hides a value of the config file. ``--help`` ends its text with
``(default: X)`` from the options dataclass (:class:`OptionsHelpFormatter`): help texts name no default by hand.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import weakref
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
DEFAULT_HELP: weakref.WeakKeyDictionary[argparse.Action, str] = weakref.WeakKeyDictionary()
"""The ``default_help`` of each :func:`shortcut` given one."""


def shortcut(
    p: argparse.ArgumentParser, *flags: str, key: str, default_help: str | None = None, **kwargs: Any
) -> argparse.Action:
    """A flag (``--out``) for the option ``key`` (``out``, ``clean.high_pass``); set only when given. ``--help``
    ends its text with ``(default: X)``: the options dataclass's default of ``key`` (:func:`default_text`), or
    ``default_help`` where a value cannot say it (``"the cluster's CPUs"``; ``{default}`` in it is the value)."""
    if "action" not in kwargs and "choices" not in kwargs:
        kwargs.setdefault("metavar", flags[-1].lstrip("-").replace("-", "_").upper())  # as argparse names it
    action = p.add_argument(*flags, dest=SHORTCUT + key, default=argparse.SUPPRESS, **kwargs)
    if default_help is not None:
        DEFAULT_HELP[action] = default_help
    return action


def option_default(cls: type, key: str) -> Any:
    """The default of the dotted option ``key`` (``clean.high_pass``) of the options dataclass ``cls``;
    ``dataclasses.MISSING`` for a required option."""
    name, _, rest = key.partition(".")
    field = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if field is None:
        raise KeyError(f"option {key!r}: {cls.__name__} has no field {name!r}")
    value = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    for part in rest.split(".") if rest else ():
        value = getattr(value, part)
    return value


def format_default(value: Any) -> str:
    """A default as a user would type it: ``16``, ``0.735``, ``true``, ``a,b`` (tuples, lists); ``""`` for
    none, empty or required."""
    if value is None or value is dataclasses.MISSING or (isinstance(value, (str, tuple, list, dict)) and not value):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    if isinstance(value, (tuple, list)):
        return ",".join(format_default(v) for v in value)
    return str(value)


def default_text(action: argparse.Action, cls: type | None) -> str:
    """The X of ``(default: X)`` for the flag ``action`` of a command whose options are ``cls``: its
    ``default_help``, else the dataclass default; ``""`` (nothing shown) for an on/off flag, no options class
    or an empty default."""
    value = ""
    if cls is not None and action.dest.startswith(SHORTCUT):
        value = format_default(option_default(cls, action.dest.removeprefix(SHORTCUT)))
    if action in DEFAULT_HELP:
        return DEFAULT_HELP[action].format(default=value)
    return "" if action.nargs == 0 else value


def flag_help(action: argparse.Action, cls: type | None) -> str | None:
    """The help of ``action`` as ``--help`` shows it: its text, then ``(default: X)`` (:func:`default_text`)."""
    shown = default_text(action, cls)
    if not shown or action.help == argparse.SUPPRESS:
        return action.help
    return f"{action.help} (default: {shown})" if action.help else f"(default: {shown})"


class OptionsHelpFormatter(argparse.HelpFormatter):
    """The help of a command's parser (see :func:`add_command`): each flag's text ends with its default in the
    options class named ``options`` (see :func:`options_class`), imported only when the help is printed."""

    def __init__(self, prog: str, *, options: str | None = None, **kwargs: Any) -> None:
        super().__init__(prog, **kwargs)
        self.options = options

    def _format_action(self, action: argparse.Action) -> str:
        # here, not in _get_help_string: Python 3.14's argparse expands help strings as each flag is added
        shown = copy.copy(action)
        shown.help = flag_help(action, options_class(self.options) if self.options is not None else None)
        return super()._format_action(shown)


def parser_options(parser: argparse.ArgumentParser) -> type | None:
    """The options class whose defaults the help of ``parser`` shows (None: not a :func:`add_command` parser)."""
    formatter = parser.formatter_class
    options = formatter.keywords.get("options") if isinstance(formatter, partial) else None
    return options_class(options) if options is not None else None


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
    and ``key=value`` overrides; the command's flags are added by the caller with :func:`shortcut`, and its
    ``--help`` shows their defaults in ``cls`` (:class:`OptionsHelpFormatter`)."""
    epilog = "\n".join(e for e in (parser_kwargs.pop("epilog", ""), EPILOG) if e)
    formatter = partial(OptionsHelpFormatter, options=cls)
    p = sub.add_parser(name, help=help, epilog=epilog, formatter_class=formatter, **parser_kwargs)
    what = cls.rpartition(":")[2] if cls is not None else "options"
    p.add_argument(
        "--config",
        type=config_argument,
        default=config_default,
        metavar="FILE",
        help=f"YAML file of {what} (a path, or a built-in name such as pretrain/tiny)"
        + (f" (default: {config_default})" if config_default else ""),
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
