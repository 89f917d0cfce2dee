"""Config files by name or path: ``pretrain/tiny`` is the built-in ``configs/pretrain/tiny.yaml``.

The checkout's ``configs/`` folder is installed as the package ``brainjepa_platform.configs`` (package data),
so the built-in configs are there in a non-editable install (the Docker image, ``pip install .``) as well
as in a checkout. ``--config`` of ``pretrain``, ``sweep`` and ``pretrain-local``, and the demo, resolve
through :func:`resolve_config`: an existing file is used as is (the user's own config); otherwise the
reference names a built-in config, with or without ``configs/`` in front and ``.yaml`` behind.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from brainjepa.config import ConfigError

PACKAGE = "brainjepa_platform.configs"


def config_root() -> Path:
    """The folder of the built-in configs (the checkout's ``configs/`` in an editable install)."""
    root = resources.files(PACKAGE)
    if not isinstance(root, Path):  # a zipped install: configs refer to each other by relative path
        raise ConfigError(f"{PACKAGE} is not installed as a folder ({root}); install brainjepa unzipped")
    return root


def available_configs() -> list[str]:
    """Names of the built-in configs, e.g. ``["local/demo", "pretrain/base", ...]``."""
    root = config_root()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def builtin_name(ref: str) -> str:
    """``configs/pretrain/tiny.yaml``, ``pretrain/tiny.yaml`` and ``pretrain/tiny`` all name ``pretrain/tiny``."""
    name = ref.replace("\\", "/").removeprefix("./").removeprefix("configs/")
    return name.removesuffix(".yaml").removesuffix(".yml")


def builtin_config(ref: str) -> Path:
    """The built-in config ``ref`` names (whatever the working directory holds), or a ConfigError listing them."""
    name = builtin_name(ref)
    available = available_configs()
    if name not in available:
        raise ConfigError(
            f"config {ref!r}: no such file, and no built-in config of that name; "
            f"built-in configs: {', '.join(available)}"
        )
    return config_root() / f"{name}.yaml"


def resolve_config(ref: str | Path) -> Path:
    """An existing file as is (the user's own config); else the built-in config ``ref`` names."""
    path = Path(ref).expanduser()
    return path if path.is_file() else builtin_config(str(ref))


def config_argument(ref: str) -> Path:
    """``type=`` of a ``--config`` option: resolved while the arguments are parsed, so a wrong name is
    reported before anything starts."""
    try:
        return resolve_config(ref)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
