"""Typed dataclass configs: YAML files plus ``key=value`` overrides, resolved and saved with every run."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override does not match the dataclass it should fill."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        seq = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(seq) if origin is tuple else seq
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from exc
        if not as_float.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from exc
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys are an error."""
    types_by_name = _field_types(cls)
    unknown = set(data) - set(types_by_name)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s) {sorted(prefix + k for k in unknown)}; {cls.__name__} takes {sorted(types_by_name)}"
        )
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"missing config key(s) {[prefix + k for k in missing]}: {cls.__name__} has no default for them"
        )
    section_defaults = {f.name: f.metadata.get(SECTION_DEFAULTS) for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        if isinstance(value, dict) and section_defaults[name]:
            value = {**section_defaults[name], **value}  # a partial section keeps the parent's own defaults
        kwargs[name] = _coerce(value, types_by_name[name], key)
    return cls(**kwargs)


SECTION_DEFAULTS = "section_defaults"


def section(cls: type[T], **defaults: Any) -> Any:
    """A nested config field whose defaults differ from ``cls``'s own (e.g. a tiny model in a local
    config). Overriding one key of it (``model.n_rois=16``) keeps the others: they are merged into
    the given keys before ``cls`` is built, so fields derived in ``__post_init__`` follow overrides."""
    return dataclasses.field(default_factory=lambda: cls(**defaults), metadata={SECTION_DEFAULTS: defaults})


def _plain(v: Any) -> Any:
    """Tuples become lists, recursively (what YAML's safe dumper and JSON take)."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a dataclass config (tuples become lists, ready for YAML/JSON)."""
    return _plain(dataclasses.asdict(cfg))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML scalars) to a nested dict copy."""
    out = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return out


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: Mapping[str, Any] | None = None,
) -> T:
    """Load ``cls`` from an optional YAML file, set the dotted ``values`` (already typed, not parsed: e.g. a
    command's flags), then apply ``key=value`` overrides (the last word)."""
    data = read_yaml_with_extends(Path(path)) if path is not None else {}
    for key, value in (values or {}).items():
        set_dotted(data, key, _plain(value))
    # merge into the file's own mapping (not the resolved defaults): fields derived in __post_init__
    # (e.g. a preset's width) must follow an overridden preset
    merged = apply_overrides(data, overrides or [])
    try:
        return from_dict(cls, merged)
    except ConfigError as exc:
        origin = f"{path}: " if path else ""
        raise ConfigError(f"{origin}{exc}") from None


def read_yaml_with_extends(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML mapping; ``extends: other.yaml`` (relative to the file) is loaded first and overlaid."""
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself")
    with path.open() as stream:  # YAML errors then name the file
        loaded = yaml.safe_load(stream) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    parent = loaded.pop("extends", None)
    if parent is None:
        return loaded
    base = read_yaml_with_extends(path.parent / parent, (*_seen, path.resolve()))
    return deep_merge(base, loaded)


# --- nested-dict helpers (configs, params, resume checks) ------------------------------------------------
def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` overlaid with ``update``: sections present in both are merged key by key, anything else in
    ``update`` replaces ``base``'s value (copies; the inputs are left as they are)."""
    out = dict(base)
    for key, value in update.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = deep_merge(out[key], value) if both else value
    return out


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"a.b.c": value}``; an empty section stays one entry (``{"a": {}}``)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        dotted = f"{prefix}{key}"
        out.update(flatten(value, f"{dotted}.") if isinstance(value, Mapping) and value else {dotted: value})
    return out


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``data["a"]["b"]["c"] = value`` for ``key="a.b.c"``, creating sections as needed."""
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {part!r} is not a section")
    node[last] = value


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
