"""The brainjepa command line, as a user runs it: in this process through its entry point (main), and once as
the installed `brainjepa` program."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from brainjepa_platform.cli.main import main

BRAINJEPA = shutil.which("brainjepa") or str(Path(sys.executable).parent / "brainjepa")


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., subprocess.CompletedProcess]:
    """`brainjepa ARGS` in this process: its exit status and what it printed on stdout and stderr."""

    def run_main(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["brainjepa", *args], code, out.out, out.err)

    return run_main


def test_masks_command_reports_invariants(run, tmp_path) -> None:
    png = tmp_path / "masks.png"
    out = run(
        "masks",
        "--rois",
        "450",
        "--frames",
        "160",
        "--patch",
        "16",
        "--batch",
        "16",
        "--samples",
        "300",
        "--seed",
        "0",
        "--json",
        "--plot",
        str(png),
    )
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["overlap_tokens"] == 0
    assert stats["samples_missing_region"] == 0
    assert stats["last_patch_observed_fraction"] > 0
    assert 0 < stats["context_tokens_mean"] < 4500 and 0 < stats["target_tokens_mean"] < 4500
    assert png.stat().st_size > 10_000


@pytest.mark.integration
def test_masks_command_rejects_bad_override() -> None:
    """The installed program: its exit status and stderr as a shell sees them."""
    out = subprocess.run(
        [BRAINJEPA, "masks", "--rois", "20", "--frames", "40", "--patch", "8", "cross_roi_scale=[0.9, 0.1]"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 2
    assert "cross_roi_scale" in out.stderr and not out.stdout


def test_masks_command_rejects_bad_override_in_process(run) -> None:
    out = run("masks", "--rois", "20", "--frames", "40", "--patch", "8", "cross_roi_scale=[0.9, 0.1]")
    assert out.returncode == 2
    assert "cross_roi_scale" in out.stderr


def test_bench_step_prints_mfu_fields(run) -> None:
    out = run(
        "bench",
        "step",
        "--model",
        "tiny",
        "--rois",
        "40",
        "--frames",
        "64",
        "--patch",
        "16",
        "--batch",
        "2",
        "--steps",
        "1",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("samples_per_s", "step_tflop", "achieved_gflops", "matmul_peak_gflops", "mfu"):
        assert result[key] > 0
    assert result["mfu"] == pytest.approx(result["achieved_gflops"] / result["matmul_peak_gflops"])


SMALL_MASKS = {"rois": 20, "frames": 40, "patch": 8, "min_context": 10}
"""A tiny grid and one mask key, for ``masks --config``."""


def write_yaml(path: Path, data: dict) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_masks_config_file_gives_the_flags_result(run, tmp_path) -> None:
    config = write_yaml(tmp_path / "masks.yaml", SMALL_MASKS)
    from_file = run("masks", "--config", config, "--samples", "5", "--json")
    from_flags = run(
        "masks", "--rois", "20", "--frames", "40", "--patch", "8", "--samples", "5", "--json", "min_context=10"
    )
    assert from_file.returncode == 0, from_file.stderr
    stats = json.loads(from_file.stdout)
    assert stats == json.loads(from_flags.stdout)
    assert stats["config"]["min_context"] == 10
    assert stats["context_tokens_mean"] + stats["target_tokens_mean"] <= 20 * 5  # the file's 20 x 5 grid


def test_masks_flag_beats_the_file_and_key_value_beats_the_flag(run, tmp_path) -> None:
    config = write_yaml(tmp_path / "masks.yaml", SMALL_MASKS)

    def resolved(*argv: str) -> dict:
        out = run("masks", "--config", config, "--print-config", *argv)
        assert out.returncode == 0, out.stderr
        return yaml.safe_load(out.stdout)

    from_file = resolved()
    assert {k: from_file[k] for k in SMALL_MASKS} == SMALL_MASKS
    assert resolved("--frames", "48") == {**from_file, "frames": 48}
    assert resolved("--frames", "48", "frames=56", "min_context=12") == {**from_file, "frames": 56, "min_context": 12}


def test_masks_print_config_shows_the_defaults(run) -> None:
    from brainjepa.config import to_dict
    from brainjepa.masks import MaskConfig

    out = run("masks", "--print-config")
    assert out.returncode == 0, out.stderr
    grid = {"rois": 450, "frames": 160, "patch": 16, "batch": 16, "samples": 300, "seed": 0}
    assert yaml.safe_load(out.stdout) == {**to_dict(MaskConfig()), **grid, "json": False, "plot": None}


def test_bench_step_print_config_shows_the_defaults(run) -> None:
    out = run("bench", "step", "--print-config")
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout) == {
        "model": "small",
        "rois": 450,
        "frames": 160,
        "patch": 16,
        "gradients": 30,
        "batch": 2,
        "steps": 3,
        "warmup": 1,
        "device": "cpu",
        "dtype": "float32",
        "threads": 0,
        "seed": 0,
        "json": False,
    }


def test_bench_step_takes_a_config_file_and_flags(run, tmp_path) -> None:
    shape = {"model": "tiny", "rois": 8, "frames": 32, "patch": 8, "batch": 2, "steps": 1, "warmup": 0}
    config = write_yaml(tmp_path / "bench.yaml", shape)
    out = run("bench", "step", "--config", config, "--batch", "1", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert (result["model"], result["batch"], result["steps"]) == ("tiny", 1, 1)
    assert result["context_tokens"] + result["target_tokens"] <= 8 * 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["masks", "min_contxt=20"], "brainjepa masks: error: unknown config key(s) ['min_contxt']"),
        (
            ["bench", "step", "--model", "tiny", "stepz=1"],
            "brainjepa bench step: error: unknown config key(s) ['stepz']",
        ),
        (["masks", "--rois", "20", "--frames", "41", "--patch", "8"], "frames=41 is not a multiple of patch=8"),
        (["bench", "step", "dtype=fp16"], "dtype: expected one of ['float32', 'bf16'], got 'fp16'"),
    ],
)
def test_masks_and_bench_step_name_the_bad_option(run, argv: list[str], message: str) -> None:
    out = run(*argv)
    assert out.returncode == 2 and not out.stdout
    assert message in out.stderr


@pytest.mark.slow  # 30 steps: enough for the loss to fall
def test_local_pretraining_trains_and_writes_artifacts(run, tmp_path) -> None:
    out = run("pretrain-local", "--steps", "30", "--out", str(tmp_path / "demo"), "batch_size=8", "subjects=12")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Loss fell from" in out.stdout
    for name in ("config.yaml", "checkpoint.pt", "masks.png", "training_curves.png"):
        assert (tmp_path / "demo" / name).exists(), name
    resolved = yaml.safe_load((tmp_path / "demo" / "config.yaml").read_text())
    assert resolved["steps"] == 30 and resolved["batch_size"] == 8


# --- one convention: --config FILE, flags as shortcuts, key=value overrides, --print-config --------------
def test_options_come_from_the_file_then_flags_then_overrides(tmp_path, capsys) -> None:
    from brainjepa_platform.cli import main as cli

    config = tmp_path / "ingest.yaml"
    config.write_text("out: from-file\nmin_frames: 7\nworkers: 3\nclean:\n  high_pass: 0.01\n")
    argv = [
        "ingest",
        "cohort",
        "--config",
        str(config),
        "--workers",
        "5",
        "--confounds",
        "a,b",
        "--detrend",
        "--print-config",
        "workers=6",
        "clean.low_pass=0.1",
    ]
    assert cli.main(argv) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["source"] == "cohort" and resolved["out"] == "from-file" and resolved["min_frames"] == 7
    assert resolved["workers"] == 6  # key=value has the last word, over the flag and the file
    assert resolved["clean"] == {"detrend": True, "high_pass": 0.01, "low_pass": 0.1, "confound_columns": ["a", "b"]}
    assert resolved["format"] == "auto" and resolved["quiet"] is False  # flags left out hide no default


@pytest.mark.parametrize(
    "argv",
    [
        ["gradients", "fc.npy", "--out", "g.npz", "--n-components", "5", "params.kernel=cosine"],
        ["gradients", "fc.npy", "params.kernel=cosine", "--out", "g.npz", "params.n_components=5"],
    ],
)
def test_overrides_may_follow_positionals_and_flags(argv, capsys) -> None:
    from brainjepa_platform.cli import main as cli

    assert cli.main([*argv, "--print-config"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["params"]["kernel"] == "cosine" and resolved["params"]["n_components"] == 5
    assert resolved["source"] == "fc.npy" and resolved["out"] == "g.npz" and resolved["json"] is False


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["embed", "--data", "d", "--out", "o", "bogus=1"], "bogus"),
        (["embed", "--data", "d"], "'out'"),
        (["synth", "--out", "x", "subjects=many"], "subjects"),
        (["demo", "targets=age", "workerz=2"], "workerz"),
        (["export-checkpoint", "models:/m/1", "--out", "o", "source.x=1"], "source"),
    ],
)
def test_a_bad_key_is_one_line_naming_it(argv, named, capsys) -> None:
    from brainjepa_platform.cli import main as cli

    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"brainjepa {argv[0]}: error: ") and named in err[0], err


def test_every_command_prints_its_resolved_config(capsys) -> None:
    from brainjepa_platform.cli import main as cli

    cases = {
        ("demo", "--targets", "age,sex"): {"targets": ["age", "sex"], "subjects": 40},
        ("synth", "--out", "x", "--format", "parquet"): {"format": "parquet", "rois": 24},
        ("dataset", "info", "uri"): {"uri": "uri", "json": False},
        ("evaluate", "--data", "d", "--target", "age", "finetune.epochs=2"): {"target": "age", "seeds": 5},
        ("fingerprint", "--data", "d", "--random-draws", "2"): {"random_draws": 2, "centring": "cohort"},
        ("import-checkpoint", "c.pth", "--gradients", "g.csv", "--tr", "2"): {"tr": 2.0, "checkpoint": "c.pth"},
        ("pretrain-local", "--steps", "3"): {"steps": 3, "out": "local-output"},
        ("pretrain", "data.dataset=d"): {"data": {"dataset": "d"}},
    }
    for argv, expected in cases.items():
        assert cli.main([*argv, "--print-config"]) == 0, argv
        resolved = yaml.safe_load(capsys.readouterr().out)
        for key, value in expected.items():
            got = resolved[key] if not isinstance(value, dict) else {k: resolved[key][k] for k in value}
            assert got == value, (argv, key)


def test_log_level_is_global_and_also_after_the_command(capsys, monkeypatch) -> None:
    """--log-level (before or after the command; --debug: DEBUG) holds while the command runs; when main()
    returns, brainjepa's loggers are as they were (no handler or level left behind in-process)."""
    import logging

    from brainjepa_platform.cli import library
    from brainjepa_platform.cli import main as cli

    logger = logging.getLogger("brainjepa_platform")
    before = (logger.level, list(logger.handlers))
    seen: list[tuple[int, int]] = []

    def command(opts, args) -> int:
        seen.append((logger.level, len([h for h in logger.handlers if h.get_name() == "brainjepa-cli"])))
        logging.getLogger("brainjepa_platform.train.streaming").error("scans skipped")
        logging.getLogger("brainjepa_platform.train.streaming").info("an info line")
        return 0

    monkeypatch.setattr(library, "cmd_masks", command)
    for argv in (["masks"], ["masks", "--log-level", "info"], ["masks", "--debug"], ["--log-level", "ERROR", "masks"]):
        assert cli.main(argv) == 0
        assert (logger.level, list(logger.handlers)) == before
    assert seen == [(logging.WARNING, 1), (logging.INFO, 1), (logging.DEBUG, 1), (logging.ERROR, 1)]
    err = capsys.readouterr().err
    assert err.count("brainjepa masks: ERROR: scans skipped\n") == 4 and err.count("an info line") == 2


# --- --help shows each flag's default from the options dataclass ---------------------------------------------
def command_parsers(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every subcommand parser under ``parser`` (``"ingest"``, ``"dataset info"``, ...), depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from command_parsers(sub, f"{prefix}{name} ")


def dataclass_default(cls: type, key: str) -> Any:
    """The default of the dotted ``key`` in the dataclass ``cls`` (None for a required option)."""
    name, *rest = key.split(".")
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    value = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    for part in rest:
        value = getattr(value, part)
    return None if value is dataclasses.MISSING else value


def shown_defaults(text: str) -> list[str]:
    return re.findall(r"\(default: (.*?)\)(?:$|\s)", " ".join(text.split()))


def flattened(text: str) -> str:
    """``text`` without whitespace: argparse wraps help lines anywhere (also after a hyphen)."""
    return "".join(text.split())


def test_help_shows_the_options_dataclass_defaults() -> None:
    """Every "(default: X)" of a flag in any command's --help is the flag's value in the options dataclass (X,
    read with the flag's own type, equals it), or the flag's words for it; no help names a default otherwise."""
    from brainjepa_platform.cli.main import build_parser
    from brainjepa_platform.cli.options import DEFAULT_HELP, SHORTCUT, flag_help, parser_options

    checked = 0
    for command, parser in command_parsers(build_parser()):
        flags = [a for a in parser._actions if a.option_strings and a.dest.startswith(SHORTCUT)]
        cls = parser_options(parser)
        assert cls is not None or not flags, f"{command}: flags but no options class"
        page = flattened(parser.format_help())
        for action in flags:
            where, value = f"{command} {action.option_strings[0]}", dataclass_default(cls, action.dest[len(SHORTCUT) :])
            text = flag_help(action, cls) or ""
            assert flattened(text) in page, where
            shown = shown_defaults(text)
            assert len(shown) == text.count("default") <= 1, f"{where}: a default named by hand: {text!r}"
            words = DEFAULT_HELP.get(action)
            if words is not None:
                assert shown and "{" not in shown[0], where
                if not words.startswith("{default}"):
                    continue
                shown = [shown[0].split(",")[0]]
            if action.nargs == 0 or value in (None, "", ()):
                assert not shown, f"{where}: shows {shown} for {value!r}"
                continue
            assert len(shown) == 1, f"{where}: no (default: {value})"
            typed = action.type(shown[0]) if callable(action.type) else shown[0]
            assert typed == value, f"{where}: help says {shown[0]!r}, the dataclass {value!r}"
            rest = text.replace(f"(default: {shown[0]})", "")
            assert not re.search(rf"[(;,] ?{re.escape(shown[0])}\)", rest), f"{where}: hand-written default {text!r}"
            checked += 1
    assert checked >= 40  # every command with flags took part


def test_help_follows_a_changed_dataclass_default(monkeypatch, capsys) -> None:
    from brainjepa_platform.cli.commands import SynthCommand

    subjects = next(f for f in dataclasses.fields(SynthCommand) if f.name == "subjects")
    monkeypatch.setattr(subjects, "default", 99)
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    page = " ".join(capsys.readouterr().out.split())
    assert "synthetic subjects (default: 99)" in page and "(default: 16)" not in page
    assert "--rois ROIS ROIs of the atlas (default: 24)" in page


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.735, "0.735"),
        (128.0, "128"),
        (1 / 3, repr(1 / 3)),
        (("a", "b"), "a,b"),
        (True, "true"),
        (0, "0"),
        (None, ""),
        ("", ""),
        ((), ""),
        (dataclasses.MISSING, ""),
    ],
)
def test_defaults_are_shown_as_typed(value, shown) -> None:
    from brainjepa_platform.cli.options import format_default

    assert format_default(value) == shown
