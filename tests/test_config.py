"""Typed configs: YAML, key=value overrides, clear errors, resolved round trip."""

from __future__ import annotations

import pytest

from brainjepa.config import ConfigError, load_config, save_config
from brainjepa.local import LocalPretrainConfig


def test_yaml_and_overrides(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  size: small\n  n_rois: 100\nsteps: 7\n")
    overrides = ["model.size=tiny", "masks.cross_roi_scale=[0.3, 0.4]", "optim.lr=3e-4"]
    cfg = load_config(LocalPretrainConfig, path, overrides)
    assert cfg.model.size == "tiny" and cfg.model.dim == 64  # preset width follows the overridden size
    assert cfg.model.n_rois == 100 and cfg.steps == 7
    assert cfg.masks.cross_roi_scale == (0.3, 0.4)
    assert cfg.optim.lr == pytest.approx(3e-4)


def test_resolved_config_round_trip(tmp_path) -> None:
    cfg = load_config(LocalPretrainConfig, None, ["model.dim=96", "seed=3"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(LocalPretrainConfig, tmp_path / "resolved.yaml")
    assert again == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.widht=3"], "model.widht"),
        (["steps=ten"], "steps"),
        (["model.positional=rope"], "positional"),
        (["masks.cross_roi_scale=[0.7, 0.2]"], "cross_roi_scale"),
        (["novalue"], "key=value"),
    ],
)
def test_bad_config_names_the_key(overrides, message) -> None:
    with pytest.raises((ConfigError, ValueError), match=message):
        load_config(LocalPretrainConfig, None, overrides)


def test_shipped_demo_config_loads() -> None:
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / "local" / "demo.yaml"
    cfg = load_config(LocalPretrainConfig, path)
    assert cfg == LocalPretrainConfig()  # the file spells out the built-in defaults


def test_a_partial_section_override_keeps_the_sections_own_defaults(tmp_path) -> None:
    """``model.n_rois=16`` on the local config changes one key of its tiny model, not the model's size."""
    cfg = load_config(LocalPretrainConfig, None, ["model.n_rois=16", "optim.lr=1e-3"])
    default = LocalPretrainConfig()
    assert (cfg.model.size, cfg.model.n_rois, cfg.model.frames, cfg.model.dim) == ("tiny", 16, 64, default.model.dim)
    assert (cfg.optim.lr, cfg.optim.start_lr) == (1e-3, default.optim.start_lr)
    # a derived field follows an overridden preset
    assert load_config(LocalPretrainConfig, None, ["model.size=small"]).model.dim == 384
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  frames: 32\n")
    assert load_config(LocalPretrainConfig, path).model.n_rois == default.model.n_rois


def test_values_sit_between_the_file_and_the_overrides(tmp_path) -> None:
    """A command's flags (typed values, not parsed as YAML) override the file; ``key=value`` has the last word."""
    path = tmp_path / "run.yaml"
    path.write_text("steps: 7\nseed: 1\nmodel:\n  n_rois: 100\n")
    cfg = load_config(
        LocalPretrainConfig,
        path,
        ["seed=3"],
        {"seed": 2, "steps": 9, "device": "yes", "masks.cross_roi_scale": (0.3, 0.4)},
    )
    assert (cfg.steps, cfg.seed, cfg.model.n_rois) == (9, 3, 100)
    assert cfg.device == "yes"  # a flag's text stays text (YAML would make it True)
    assert cfg.masks.cross_roi_scale == (0.3, 0.4)


def test_a_missing_required_key_is_a_config_error() -> None:
    from dataclasses import dataclass

    @dataclass
    class Needs:
        out: str
        quiet: bool = False

    with pytest.raises(ConfigError, match=r"missing config key\(s\) \['out'\]"):
        load_config(Needs, None, ["quiet=true"])
    assert load_config(Needs, None, ["out=x"]).out == "x"


def test_dict_helpers() -> None:
    from brainjepa.config import deep_merge, flatten, set_dotted

    base = {"a": {"b": 1, "c": 2}, "d": [1], "e": {}}
    merged = deep_merge(base, {"a": {"c": 3}, "d": [2], "f": 4})
    assert merged == {"a": {"b": 1, "c": 3}, "d": [2], "e": {}, "f": 4} and base["a"]["c"] == 2
    assert flatten(merged) == {"a.b": 1, "a.c": 3, "d": [2], "e": {}, "f": 4}
    set_dotted(merged, "g.h.i", 5)
    assert merged["g"] == {"h": {"i": 5}}
    with pytest.raises(ConfigError, match="'f' is not a section"):
        set_dotted(merged, "f.x", 1)
