"""Built-in configs by name (``pretrain/tiny``), user files by path, and the configs shipped in a real install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from brainjepa.config import ConfigError, load_config
from brainjepa_platform.cli import main as cli
from brainjepa_platform.config_files import available_configs, builtin_config, resolve_config
from brainjepa_platform.train.config import PretrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_names_resolve_to_the_checkouts_configs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # not a checkout: nothing under configs/ here
    on_disk = sorted(
        p.relative_to(ROOT / "configs").with_suffix("").as_posix() for p in (ROOT / "configs").rglob("*.yaml")
    )
    assert available_configs() == on_disk and "pretrain/tiny" in on_disk
    tiny = (ROOT / "configs" / "pretrain" / "tiny.yaml").resolve()
    for ref in ("pretrain/tiny", "pretrain/tiny.yaml", "configs/pretrain/tiny.yaml"):
        assert resolve_config(ref).resolve() == tiny, ref
    assert load_config(PretrainConfig, resolve_config("pretrain/base")).model.size == "base"  # extends: small.yaml


def test_an_existing_file_wins_over_the_builtin_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "configs" / "pretrain" / "tiny.yaml"
    own.parent.mkdir(parents=True)
    own.write_text("model:\n  size: small\n")
    assert resolve_config("configs/pretrain/tiny.yaml") == Path("configs/pretrain/tiny.yaml")
    assert resolve_config(own) == own
    assert builtin_config("configs/pretrain/tiny.yaml").resolve() == (ROOT / "configs/pretrain/tiny.yaml").resolve()


def test_an_unknown_name_lists_the_builtin_ones(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"pretrain/tinny.*built-in configs: local/demo, .*pretrain/tiny"):
        resolve_config("pretrain/tinny")
    with pytest.raises(ConfigError, match="no such file"):
        resolve_config("../pretrain/tiny")  # names stay inside the configs package
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["pretrain", "--config", "pretrain/tinny"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --config" in err and "sweep/laptop" in err


def test_cli_defaults_and_names_are_builtin_configs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    parser = cli.build_parser()
    assert parser.parse_args(["pretrain"]).config == builtin_config("pretrain/tiny")
    assert parser.parse_args(["sweep"]).config == builtin_config("sweep/masking")
    assert parser.parse_args(["sweep", "--config", "sweep/laptop"]).config == builtin_config("sweep/laptop")
    assert parser.parse_args(["pretrain-local", "--config", "local/demo"]).config == builtin_config("local/demo")
    assert parser.parse_args(["pretrain-local"]).config is None  # built-in defaults of LocalPretrainConfig


SOURCES = ("pyproject.toml", "README.md", "LICENSE", "brainjepa", "platform", "configs")
PROBE = """
import json
from brainjepa_platform import config_files
from brainjepa_platform.cli.main import build_parser
parser = build_parser()
print(json.dumps({
    "module": config_files.__file__,
    "default": str(parser.parse_args(["pretrain"]).config),
    "path_outside_a_checkout": str(parser.parse_args(["pretrain", "--config", "configs/pretrain/tiny.yaml"]).config),
    "sweep": str(parser.parse_args(["sweep", "--config", "sweep/laptop"]).config),
    "available": config_files.available_configs(),
}))
"""


@pytest.mark.slow
def test_a_non_editable_install_ships_the_configs(tmp_path: Path) -> None:
    """``pip install --target`` of a copy of the sources (as the Docker image installs), used from elsewhere."""
    src, site, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "elsewhere"
    src.mkdir()
    for name in SOURCES:  # a copy: building in the checkout would leave build/ and egg-info behind
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-compile",
            "--target",
            str(site),
            str(src),
        ],
        check=True,
        timeout=300,
    )
    installed = site / "brainjepa_platform" / "configs"
    assert sorted(p.relative_to(installed).as_posix() for p in installed.rglob("*.yaml")) == sorted(
        p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml")
    )

    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=elsewhere, env=env, capture_output=True, text=True, check=True, timeout=120
    )
    found = json.loads(out.stdout)
    assert Path(found["module"]).is_relative_to(site), found["module"]  # the installed copy, not the checkout
    assert found["default"] == found["path_outside_a_checkout"] == str(installed / "pretrain" / "tiny.yaml")
    assert found["sweep"] == str(installed / "sweep" / "laptop.yaml")
    assert "local/demo" in found["available"]
